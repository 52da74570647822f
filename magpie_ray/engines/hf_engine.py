"""HF transformers engine: the fallback when vLLM is not available or lacks an architecture.

Its thread takes up to `hf_batch_size` waiting requests at a time and decodes them as one
left-padded batch with a KV cache, sampling every row with its own `torch.Generator`, so a row's
output depends on its seed, not on which rows share its batch (`model.generate` cannot give
per-row seeds). Sampling order matches vLLM's: temperature, then min_p, then top_p.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from concurrent.futures import Future

from .base import BackgroundEngine, Completion, EngineSettings, SamplingSpec, resolve_dtype


class HFEngine(BackgroundEngine):
    def __init__(self, settings: EngineSettings):
        import torch
        from transformers import AutoModelForCausalLM

        from .tokens import load_tokenizer

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = getattr(torch, resolve_dtype(settings.dtype, self.device == "cuda"))
        self.tokenizer = load_tokenizer(settings.model_path, settings.trust_remote_code)
        # The engine thread decodes with its own copy: callers encode with `self.tokenizer`.
        self._decoder = load_tokenizer(settings.model_path, settings.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            settings.model_path, dtype=dtype, trust_remote_code=settings.trust_remote_code
        ).to(self.device)
        self.model.eval()
        self.batch_size = settings.hf_batch_size
        self.max_model_len = settings.max_model_len
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self._waiting: list = []
        super().__init__()

    def _serve(self, new_requests: list) -> bool:
        for prompt, spec, future in new_requests:
            if spec.n == 1:
                self._waiting.append((prompt, spec, future))
                continue
            children = [Future() for _ in range(spec.n)]
            for j, child in enumerate(children):
                seed = None if spec.seed is None else spec.seed + j
                self._waiting.append((prompt, dataclasses.replace(spec, n=1, seed=seed), child))
            children[-1].add_done_callback(functools.partial(_gather, future, children))
        batch, self._waiting = self._waiting[: self.batch_size], self._waiting[self.batch_size :]
        if batch:
            prompts, specs, futures = zip(*batch, strict=True)
            for future, completion in zip(
                futures, self._generate_batch(prompts, specs), strict=True
            ):
                future.set_result(completion)
        return bool(self._waiting)

    def _generate_batch(
        self, prompts: Sequence[list[int]], specs: Sequence[SamplingSpec]
    ) -> list[Completion]:
        torch = self._torch
        n = len(prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [self._generator(s.seed) for s in specs]
        tokens: list[list[int]] = [[] for _ in range(n)]
        texts = [""] * n
        finish: list[str | None] = [None] * n
        budget = [
            min(s.max_tokens, self.max_model_len - len(p))
            for s, p in zip(specs, prompts, strict=True)
        ]
        cache = None
        step_ids = ids
        with torch.inference_mode():
            while not all(finish):
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
                cache = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_ids = []
                for i in range(n):
                    if finish[i]:
                        next_ids.append(self.pad_id)
                        continue
                    seen = (prompts[i], tokens[i]) if specs[i].repetition_penalty != 1 else None
                    tok = _sample(torch, logits[i], specs[i], generators[i], seen)
                    tokens[i].append(tok)
                    next_ids.append(tok)
                    finish[i], texts[i] = self._check_stop(tokens[i], specs[i], budget[i])
                step_ids = torch.tensor(next_ids, dtype=torch.long, device=self.device)[:, None]
                mask = torch.cat(
                    [mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], 1
                )
                positions = positions[:, -1:] + 1
        return [
            Completion(
                text=texts[i],
                num_prompt_tokens=len(prompts[i]),
                num_output_tokens=len(tokens[i]),
                finish_reason=finish[i] or "length",
                token_ids=tuple(tokens[i]),
            )
            for i in range(n)
        ]

    def _check_stop(self, tokens: list[int], spec: SamplingSpec, budget: int):
        """(finish_reason or None, text so far) after the newest token."""
        if spec.ignore_eos:  # decode once, at the end
            return ("length", self._decode(tokens)) if len(tokens) >= budget else (None, "")
        if tokens[-1] in spec.stop_token_ids:
            return "stop", self._decode(tokens[:-1])
        text = self._decode(tokens)
        cut = [text.find(s) for s in spec.stop if s in text]
        if cut:
            return "stop", text[: min(cut)]
        if len(tokens) >= budget:
            return "length", text
        return None, text

    def _decode(self, tokens: list[int]) -> str:
        return self._decoder.decode(tokens, skip_special_tokens=True)

    def _generator(self, seed: int | None):
        gen = self._torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else self._torch.seed())
        return gen


def _gather(parent: Future, children: list[Future], _last: Future) -> None:
    """Resolve an n > 1 request once its samples (served in order, so the last one last) are."""
    samples = tuple(child.result() for child in children)
    parent.set_result(dataclasses.replace(samples[0], samples=samples))


def _sample(torch, logits, spec: SamplingSpec, generator, seen=None) -> int:
    if spec.banned_token_ids:
        logits = logits.clone()
        logits[list(spec.banned_token_ids)] = float("-inf")
    if seen is not None:  # vLLM's repetition penalty: every token of prompt or output so far
        ids = torch.tensor(sorted({*seen[0], *seen[1]}), dtype=torch.long, device=logits.device)
        picked = logits[ids]
        logits = logits.clone()
        logits[ids] = torch.where(
            picked > 0, picked / spec.repetition_penalty, picked * spec.repetition_penalty
        )
    if spec.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / spec.temperature, dim=-1)
    if spec.min_p > 0:
        probs = torch.where(probs < spec.min_p * probs.max(), 0.0, probs)
    if spec.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        cumulative = sorted_probs.cumsum(-1) / sorted_probs.sum()
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = cumulative - sorted_probs / sorted_probs.sum() >= spec.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
