"""Engines inside actors: their settings from a model's config, a tagging model's start, and
what an actor does when its engine dies.

An engine that dies mid-run makes its actor exit (`exit_if_engine_died`): Ray restarts the
actor with a fresh engine and retries its calls there, and the step's next pass regenerates rows
the dead actor had taken. Used by the generate step's actor, the taggers and the reward scorer
on vLLM's pooling runner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping

from .base import Engine, EngineSettings

log = logging.getLogger(__name__)


def engine_name(key: str, settings: EngineSettings) -> str:
    """How logs name an engine: its config key, kind and model."""
    return f"{key} ({settings.kind}, {settings.model_path})"


def exit_if_engine_died(engines: Mapping[str, Engine | None]) -> None:
    """In an actor: if one of its engines (named by config key, kind and model) is dead, log
    one line naming it and its cause, and end the actor's process.

    Not `ray.actor.exit_actor()`: Ray does not retry the calls of an actor that exited on
    purpose, but does retry those of one whose process died (Ray's own LLM stage exits the
    same way). Ray Data restarts the actor, with a fresh engine, and the step's next pass
    regenerates any row the dead actor had taken from a call that had already returned."""
    for name, engine in engines.items():
        failure = getattr(engine, "failure", None)
        if failure is None:
            continue
        cause = " ".join(f"{type(failure).__name__}: {failure}".split())[:300]
        log.error(
            "%s died mid-run (%s); exiting this actor (pid %d) so that Ray restarts it with a"
            " fresh engine and its rows are generated again",
            name,
            cause,
            os.getpid(),
        )
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(1)


@contextlib.contextmanager
def engine_death_exits(engines: Mapping[str, Engine | None]) -> Iterator[None]:
    """Around an actor call: a call on an actor whose engine is dead (before it or during it)
    ends the actor's process (`exit_if_engine_died`); other errors pass through."""
    exit_if_engine_died(engines)
    try:
        yield
    except Exception:
        exit_if_engine_died(engines)
        raise


def engine_settings(
    kind: str,
    model,
    memory,
    seed: int,
    *,
    max_num_seqs: int = 256,
    enforce_eager: bool = False,
    hf_batch_size: int = 16,
    start_timeout_s: float | None = None,
) -> EngineSettings:
    """`model` gives the weights and their shape (a config with `path`, `dtype`,
    `max_model_len`, ...), `memory` the GPU / KV-cache budget; paths are already resolved."""
    return EngineSettings(
        kind=str(kind),
        model_path=model.path,
        dtype=model.dtype,
        max_model_len=model.max_model_len,
        tensor_parallel_size=model.tensor_parallel_size,
        pipeline_parallel_size=getattr(model, "pipeline_parallel_size", 1),
        trust_remote_code=model.trust_remote_code,
        gpu_memory_utilization=memory.gpu_memory_utilization,
        kv_cache_gib=memory.kv_cache_gib,
        enforce_eager=enforce_eager,
        max_num_seqs=max_num_seqs,
        hf_batch_size=hf_batch_size,
        seed=seed,
        extra_kwargs=dict(getattr(memory, "extra_kwargs", None) or {}),
        start_timeout_s=start_timeout_s,
    )


def load_tagger_engine(key: str, config, seed: int) -> tuple[Engine, dict[str, Engine]]:
    """The engine of a generative tagging model (guard, judge: an `LMTaggerConfig` at config
    key `key`), started within its `start_timeout_s`, and the {name: engine} map that
    `engine_death_exits` watches."""
    from . import load_engine

    settings = engine_settings(
        config.engine,
        config,
        config,
        seed,
        max_num_seqs=config.max_num_seqs,
        start_timeout_s=config.start_timeout_s,
    )
    engine = load_engine(settings, key)
    return engine, {engine_name(key, settings): engine}
