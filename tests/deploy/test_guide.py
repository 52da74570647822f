"""deploy/README.md: every row of the sizing table composes against conf/ and fits the 8-GPU
worker pod of the shipped RayCluster, with the rules the guide states."""

from __future__ import annotations

import re
import shlex

import pytest

from magpie_ray.preflight import check_resources
from magpie_ray.validation import validate_static
from tests.deploy import manifests as m
from tests.deploy.manifests import compose_entrypoint

GUIDE = m.REPO / "deploy" / "README.md"


def sizing_rows() -> list[tuple[str, str]]:
    """(model and GPU, overrides) of the sizing table: its rows whose cell is `model=...`."""
    rows = re.findall(r"^\| ([^|]+) \| `(model=[^`]+)` \|$", GUIDE.read_text(), re.MULTILINE)
    assert len(rows) >= 4, f"sizing table not found in {GUIDE}"
    return rows


def eight_gpu_pod() -> dict[str, float]:
    (cluster,) = m.rendered()["deploy/kuberay/raycluster"]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    return m.group_resources(group)


@pytest.mark.parametrize("where, overrides", sizing_rows())
def test_sizing_row_composes_and_fills_one_8_gpu_pod(where, overrides):
    cfg = compose_entrypoint(f"python -m magpie_ray {overrides}")
    validate_static(cfg)
    pod = eight_gpu_pod()
    check_resources(cfg, pod)
    cl = cfg.cluster
    assert cl.gpus_per_actor == cfg.model.tensor_parallel_size, where
    assert cl.num_actors * cl.gpus_per_actor == pod["GPU"], f"{where}: leaves GPUs idle"
    assert cl.batches_in_flight * cfg.generate.batch_size >= cfg.engine.max_num_seqs, (
        f"{where}: the engine runs dry between batches"
    )
    assert len(shlex.split(overrides)) == len(set(shlex.split(overrides))), where


def test_the_main_readme_links_the_guide():
    assert "deploy/README.md" in (m.REPO / "README.md").read_text()
