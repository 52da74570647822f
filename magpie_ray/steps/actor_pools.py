"""How steps put models on Ray: Ray Data actor pools, their start retries and placement.

Both row-wise steps (generate, tag) run their models in Ray Data actor pools: one model load per
actor, `concurrency` calls in flight per actor (threaded, so a call that waits on its engine
does not block the others). A first pass starts the configured pool at once; a later pass (rows
lost with a dead actor or node) starts at one actor and grows to the configured size, so it
also runs on a cluster that lost a node. With `max_actors` a pool autoscales between the two
sizes. Actors that die while they start are replaced up to `cluster.actor_start_retries` times
in a row before the run fails. (An engine that dies mid-run ends its actor:
`engines/lifecycle.py`.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

from ..config import ConfigError
from ..engines import start_failure

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
