"""How steps put models on Ray: engine settings from a model's config, and actor pools.

Both row-wise steps (generate, tag) run their models in Ray Data actor pools: one model load per
actor, `concurrency` calls in flight per actor (threaded, so a call that waits on its engine
does not block the others). A first pass starts the configured pool at once; a later pass (rows
lost with a dead actor or node) starts at one actor and grows to the configured size, so it
also runs on a cluster that lost a node. With `max_actors` a pool autoscales between the two
sizes. Actors that die while they start are replaced up to `cluster.actor_start_retries` times
in a row before the run fails. An engine that dies mid-run makes its actor exit
(`exit_if_engine_died`): Ray restarts the actor with a fresh engine and retries its calls
there, and the step's next pass regenerates rows the dead actor had taken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping

from ..config import ConfigError
from ..engines import start_failure
from ..engines.base import Engine, EngineSettings

log = logging.getLogger(__name__)


class EngineStartFailed(ConfigError):
    """An engine actor could not start after `cluster.actor_start_retries` tries: the one-line
    cause and fix its `EngineStartError` gave."""


@contextlib.contextmanager
def engine_failures():
    """Around a pass's iteration: an error that is an engine's failure to start becomes
    `EngineStartFailed` (one line, the CLI exits 2); any other error passes through. Once the
    pass ends, the placement groups its engine actors held are removed (their GPUs free for
    the next pass or step)."""
    try:
        yield
    except Exception as err:
        failure = start_failure(err)
        if failure is None:
            raise
        raise EngineStartFailed(failure) from None
    finally:
        remove_placement_groups()


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
    from ..engines import load_engine

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


def set_actor_start_retries(retries: int) -> None:
    """Actors that die while they start are replaced this many times in a row (Ray Data's own
    default fails the run at the first)."""
    import ray.data

    ray.data.DataContext.get_current().max_consecutive_actor_init_deaths = retries


def engine_placement(
    world_size: int, cpus: float, resources: Mapping[str, float] | None = None
) -> list[dict[str, float]]:
    """The placement group bundles of one engine that spans `world_size` GPUs (tensor x
    pipeline): one GPU each, the first also holding the engine actor's `cpus` and custom
    `resources` (the actor runs there; vLLM's workers take the GPUs)."""
    return [{"GPU": 1.0, "CPU": cpus, **(resources or {})}] + [{"GPU": 1.0}] * (world_size - 1)


# Placement groups made in this (the driver's) process for engine actors; a pass's groups are
# removed when it ends (`engine_failures`), freeing their GPUs for the next pass or step.
_GROUPS: list = []


def remove_placement_groups() -> None:
    if not _GROUPS:
        return
    from ray.util import remove_placement_group

    while _GROUPS:
        group = _GROUPS.pop()
        try:
            remove_placement_group(group)
        except Exception as err:  # noqa: BLE001 - already gone with its cluster
            log.debug("placement group %s not removed: %s", group.id.hex(), err)


class PlacementGroups:
    """Ray Data's `ray_remote_args_fn` for a pool of engines that span several GPUs: each actor
    starts in a placement group of its own (`bundles`, packed node by node: a node's GPUs fill
    before the next node's), which vLLM's ray executor then uses for its workers
    (`placement_group_capture_child_tasks`).

    Ray Data calls it before each actor it creates, and may create more actors than the pool
    holds at once (a replacement, a start it gave up waiting for); a new group each time would
    hold GPUs that no actor uses and leave the next actor waiting for ever. So at most `limit`
    groups (the pool's largest size) are made; later actors take them in turn, each waiting
    for its group's actor bundle to be free. An actor that Ray restarts keeps its group."""

    def __init__(self, bundles: list[dict[str, float]], limit: int):
        self.bundles, self.limit = bundles, max(1, limit)
        self.groups: list = []
        self.calls = 0

    def __call__(self) -> dict:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if len(self.groups) < self.limit:
            group = placement_group(self.bundles, strategy="PACK")
            self.groups.append(group)
            _GROUPS.append(group)
        else:
            group = self.groups[self.calls % self.limit]
        self.calls += 1
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                group, placement_group_capture_child_tasks=True
            )
        }


def map_with_actors(
    ds,
    actor: type,
    kwargs: dict,
    *,
    num_actors: int,
    max_actors: int | None = None,
    concurrency: int,
    num_cpus: float,
    num_gpus: float,
    batch_size: int | None,
    first_pass: bool = True,
    resources: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
    placement: list[dict[str, float]] | None = None,
):
    """`ds` through a pool of `actor(**kwargs)` (pyarrow batches of `batch_size` rows; None:
    one block per call): `num_actors` of them, or from `num_actors` up to `max_actors` as Ray
    Data's autoscaler finds work waiting. With `placement` (bundles), each actor starts in a
    placement group of its own and holds no GPU itself: its engine's workers take the group's."""
    import ray.data

    top = max(num_actors, max_actors or num_actors)
    if not first_pass:
        size = {"min_size": 1, "max_size": top}
    elif top > num_actors:
        size = {"min_size": num_actors, "max_size": top}
    else:
        size = {"size": num_actors}
    return ds.map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            **size,
            max_concurrent_calls_per_actor=concurrency,
            enable_true_multi_threading=concurrency > 1,
        ),
        num_cpus=num_cpus,
        num_gpus=0 if placement else num_gpus,
        resources=dict(resources or {}),
        runtime_env={"env_vars": dict(env)} if env else None,
        **({"ray_remote_args_fn": PlacementGroups(placement, top)} if placement else {}),
    )
