"""Every engine kind, once. Adding an engine is its module under `engines/` and one line here;
the config's `EngineKind` choices, the engine loader, the reward scorers and every check that
depends on what an engine can do read this table. A leaf: it imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineKindInfo:
    module: str  # under magpie_ray/engines/; with `engine_arg_names()` when `extra_kwargs`
    engine: str  # its generation engine class there (an `Engine`)
    scorer: str  # its reward-model scorer class in `engines/scorers.py`
    package: str  # the module that must be importable to use it
    kv_cache: bool  # memory is a KV cache: sized by kv_cache_gib on CPU
    schedules: bool  # batches waiting requests itself, up to `max_num_seqs`
    extra_kwargs: bool  # takes more engine arguments (`<key>.extra_kwargs`)
    pipeline_parallel: bool  # can split a model over nodes (`model.pipeline_parallel_size`)


ENGINES: dict[str, EngineKindInfo] = {
    # production: continuous batching, constrained decoding, a pooling runner for reward models
    "vllm": EngineKindInfo(
        module="vllm_engine",
        engine="VLLMEngine",
        scorer="VLLMRewardScorer",
        package="vllm",
        kv_cache=True,
        schedules=True,
        extra_kwargs=True,
        pipeline_parallel=True,
    ),
    # HF transformers: the fallback (no vLLM, odd architectures)
    "hf": EngineKindInfo(
        module="hf_engine",
        engine="HFEngine",
        scorer="HFRewardScorer",
        package="transformers",
        kv_cache=False,
        schedules=False,
        extra_kwargs=False,
        pipeline_parallel=False,
    ),
}


def engine_info(kind) -> EngineKindInfo | None:
    """The registry's entry for `kind` (a string or `EngineKind`); None for an unknown kind."""
    return ENGINES.get(str(kind))


def scorer_kind(scorer_class: str) -> str:
    """The engine kind whose reward scorer is `scorer_class`."""
    return next(kind for kind, info in ENGINES.items() if info.scorer == scorer_class)
