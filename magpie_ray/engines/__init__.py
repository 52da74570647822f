"""Engines: one small interface over vLLM (production) and HF transformers (fallback).

An engine takes prompts as token ids (the caller renders and encodes them, always with
`add_special_tokens=False`, so a template's BOS is never doubled) and one `SamplingSpec` per
prompt, and returns one `Completion` per prompt in the same order. Stop strings and stop token
ids are excluded from `text`; `finish_reason` is "stop" or "length". `import vllm` happens only in
`vllm_engine`, so this package imports on machines without vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float
    max_tokens: int
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: str  # "stop" | "length"


class Engine(Protocol):
    tokenizer: Any

    def generate(
        self, prompts: Sequence[list[int]], specs: Sequence[SamplingSpec]
    ) -> list[Completion]: ...


@dataclass(frozen=True)
class EngineSettings:
    """What an engine needs to load a model; built from ModelConfig + EngineConfig."""

    kind: str
    model_path: str
    dtype: str = "auto"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    trust_remote_code: bool = False
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None
    enforce_eager: bool = False
    max_num_seqs: int = 256
    hf_batch_size: int = 16
    seed: int = 0


def load_tokenizer(model_path: str, trust_remote_code: bool = False):
    """The generator's tokenizer alone (seconds), for template checks before the model loads."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of an already-rendered prompt: the template carries its own special tokens."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of `messages` rendered by the tokenizer's chat template, ready for a reply."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return encode(tokenizer, text)


def resolve_dtype(dtype: str, on_gpu: bool) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_gpu else "float32"


def load_engine(settings: EngineSettings) -> Engine:
    if settings.kind == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(settings)
    if settings.kind == "hf":
        from .hf_engine import HFEngine

        return HFEngine(settings)
    raise ValueError(f"unknown engine kind {settings.kind!r}; valid: vllm, hf")
