"""Engines: every model load of the project, behind small interfaces.

`registry.py` lists the engine kinds (vLLM for production, HF transformers as the fallback);
`base.py` holds the generation interface (`SamplingSpec`, `Completion`, `Engine`,
`EngineSettings`) and the background thread both engines share; `vllm_engine.py` and
`hf_engine.py` implement it; `tokens.py` holds tokenizer helpers; `scorers.py` the reward
models (transformers or vLLM's pooling runner); `embedder.py` the embedding model;
`lifecycle.py` an engine's settings, start and death inside an actor. `load_engine` and
`start_model` (here) start any of them within a timeout. vLLM is imported only inside these
modules' functions, so the package imports without it. Engines know nothing of templates, rows
or steps.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from .base import Engine, EngineSettings
from .registry import ENGINES

T = TypeVar("T")


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
    (
        r"not ready within ([\w.]+\.start_timeout_s)",
        "raise {0} if the model only loads slowly (large weights, slow storage, many GPUs),"
        " else see the actor's log for where the start hangs",
    ),
)


def start_hint(key: str, cause: str) -> str:
    for pattern, hint in _HINTS:
        match = re.search(pattern, cause, re.IGNORECASE)
        if match:
            return hint.format(*match.groups(), key=key)
    return f"check {key}'s model path and engine settings"


def load_engine(settings: EngineSettings, key: str = "engine", timeout_key: str = "") -> Engine:
    """The engine `settings.kind` names, with its model loaded (imported only when used), by
    `start_model`: `key` is the engine's config key, `timeout_key` the key of its
    `settings.start_timeout_s` (default `<key>.start_timeout_s`)."""
    import importlib

    if settings.kind not in ENGINES:
        raise ValueError(f"unknown engine kind {settings.kind!r}; valid: {list(ENGINES)}")
    info = ENGINES[settings.kind]

    def start() -> Engine:
        return getattr(importlib.import_module(f".{info.module}", __name__), info.engine)(settings)

    return start_model(
        key, settings.kind, settings.model_path, start, settings.start_timeout_s, timeout_key
    )


def start_model(
    key: str,
    kind: str,
    path: str,
    start: Callable[[], T],
    timeout_s: float | None = None,
    timeout_key: str = "",
) -> T:
    """`start()`, which loads the model of config key `key` (an engine, a reward scorer, an
    embedder), waited for at most `timeout_s` seconds (None: as long as it takes). A failure,
    or a start that runs over (`timeout_key`, default `<key>.start_timeout_s`, names the
    setting), raises `EngineStartError`: one line naming `key`, the cause and what to change."""
    try:
        return _ready_within(timeout_s, timeout_key or f"{key}.start_timeout_s", start)
    except Exception as err:  # noqa: BLE001 - any start-up failure, named once
        cause = " ".join(f"{type(err).__name__}: {err}".split())[:300].rstrip(".")
        raise EngineStartError(
            f"{key} ({kind}, {path}) failed to start: {cause}. Fix: {start_hint(key, cause)}"
        ) from err


def _ready_within(timeout_s: float | None, timeout_key: str, start: Callable[[], T]) -> T:
    """`start()` on a thread of its own, waited for at most `timeout_s` seconds (None: as long
    as it takes). A start that runs over keeps going until the process ends: the caller, an
    actor's constructor, fails, and Ray ends the actor's process."""
    if timeout_s is None:
        return start()
    ready: Future = Future()

    def run() -> None:
        try:
            ready.set_result(start())
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread
            ready.set_exception(err)

    threading.Thread(target=run, name="EngineStart", daemon=True).start()
    try:
        return ready.result(timeout=timeout_s)
    except FutureTimeout:
        raise TimeoutError(f"not ready within {timeout_key}={timeout_s:g} s") from None


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
