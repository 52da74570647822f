"""Engines: one small interface over vLLM (production) and HF transformers (fallback).

`base.py` holds the interface (`SamplingSpec`, `Completion`, `Engine`, `EngineSettings`) and the
background thread both engines share; `tokens.py` the tokenizer helpers; `load_engine` picks the
implementation. `import vllm` happens only in `vllm_engine`, so this package imports without
vLLM. Engines know nothing of templates, rows or steps.
"""

from __future__ import annotations

from .base import Engine, EngineSettings

ENGINES = {
    "vllm": ("vllm_engine", "VLLMEngine"),
    "hf": ("hf_engine", "HFEngine"),
}


def load_engine(settings: EngineSettings) -> Engine:
    """The engine `settings.kind` names, with its model loaded (imported only when used)."""
    import importlib

    if settings.kind not in ENGINES:
        raise ValueError(f"unknown engine kind {settings.kind!r}; valid: {list(ENGINES)}")
    module, name = ENGINES[settings.kind]
    return getattr(importlib.import_module(f".{module}", __name__), name)(settings)
