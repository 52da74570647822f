"""Engines: one small interface over vLLM (production) and HF transformers (fallback).

`base.py` holds the interface (`SamplingSpec`, `Completion`, `Engine`, `EngineSettings`) and the
background thread both engines share; `tokens.py` the tokenizer helpers; `load_engine` picks the
implementation. `import vllm` happens only in `vllm_engine`, so this package imports without
vLLM. Engines know nothing of templates, rows or steps.
"""

from __future__ import annotations

import re

from .base import Engine, EngineSettings

ENGINES = {
    "vllm": ("vllm_engine", "VLLMEngine"),
    "hf": ("hf_engine", "HFEngine"),
}


class EngineStartError(RuntimeError):
    """An engine could not start. Its message is one line: the config key of the engine, the
    cause and which setting to change; the driver finds it in Ray's error (`start_failure`)."""


# What an engine's start-up error says -> which settings to change (`{key}`: the engine's key).
_HINTS = (
    (
        r"No available memory for the cache blocks|KV cache|kv_cache",
        "raise {key}.kv_cache_gib (CPU) or {key}.gpu_memory_utilization (GPU), or lower the"
        " max_model_len",
    ),
    (
        r"out of memory|OutOfMemoryError|CUDA error: out of memory",
        "lower {key}.gpu_memory_utilization or the max_model_len, or shard the model over more"
        " GPUs (tensor_parallel_size)",
    ),
    (
        r"max_model_len|max_position_embeddings|model's max seq len",
        "lower the max_model_len to what the model supports",
    ),
    (
        r"No such file|does not appear to have a file|not a valid model|Can't load",
        "check the model path",
    ),
)


def start_hint(key: str, cause: str) -> str:
    for pattern, hint in _HINTS:
        if re.search(pattern, cause, re.IGNORECASE):
            return hint.format(key=key)
    return f"check {key}'s model path and engine settings"


def load_engine(settings: EngineSettings, key: str = "engine") -> Engine:
    """The engine `settings.kind` names, with its model loaded (imported only when used).
    A failure to start raises `EngineStartError` naming `key` (its config key), the cause and
    the setting to change."""
    import importlib

    if settings.kind not in ENGINES:
        raise ValueError(f"unknown engine kind {settings.kind!r}; valid: {list(ENGINES)}")
    module, name = ENGINES[settings.kind]
    try:
        return getattr(importlib.import_module(f".{module}", __name__), name)(settings)
    except Exception as err:  # noqa: BLE001 - any start-up failure, named once
        cause = " ".join(f"{type(err).__name__}: {err}".split())[:300].rstrip(".")
        raise EngineStartError(
            f"{key} ({settings.kind}, {settings.model_path}) failed to start: {cause}."
            f" Fix: {start_hint(key, cause)}"
        ) from err


_MARK = re.compile(r"EngineStartError: ([^\n\x1b]+)")


def start_failure(err: BaseException) -> str | None:
    """The `EngineStartError` line inside an error Ray raised for a dead actor, if any."""
    seen = 0
    while err is not None and seen < 10:
        match = _MARK.search(str(err))
        if match:
            return match.group(1).strip()
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None
