"""vLLM engine: the offline `LLM` API with one SamplingParams per prompt (per-row seeds)."""

from __future__ import annotations

from collections.abc import Sequence

from . import Completion, EngineSettings, SamplingSpec, resolve_dtype

_GIB = 1 << 30


class VLLMEngine:
    def __init__(self, settings: EngineSettings):
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        kwargs = dict(
            model=settings.model_path,
            dtype=resolve_dtype(settings.dtype, on_gpu),
            max_model_len=settings.max_model_len,
            tensor_parallel_size=settings.tensor_parallel_size,
            trust_remote_code=settings.trust_remote_code,
            enforce_eager=settings.enforce_eager or not on_gpu,
            max_num_seqs=settings.max_num_seqs,
            seed=settings.seed,
        )
        if on_gpu:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        if settings.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(settings.kv_cache_gib * _GIB)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self, prompts: Sequence[list[int]], specs: Sequence[SamplingSpec]
    ) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                temperature=s.temperature,
                top_p=s.top_p,
                min_p=s.min_p,
                max_tokens=s.max_tokens,
                seed=s.seed,
                stop=list(s.stop) or None,
                stop_token_ids=list(s.stop_token_ids) or None,
            )
            for s in specs
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        completions = []
        for out in outputs:
            sample = out.outputs[0]
            completions.append(
                Completion(
                    text=sample.text,
                    num_prompt_tokens=len(out.prompt_token_ids),
                    num_output_tokens=len(sample.token_ids),
                    finish_reason=sample.finish_reason or "stop",
                )
            )
        return completions
