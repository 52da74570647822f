"""deploy/README.md: every row of the sizing table composes against conf/ and fits the 8-GPU
worker pod of the shipped RayCluster, with the rules the guide states; the token-auth commands
name the Secret, key, service and port the manifests use (tests/e2e/test_job_submit.py runs
them against a real head)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from magpie_ray.preflight import check_resources
from magpie_ray.validation import validate_static
from tests.deploy import guide
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


def test_the_guides_token_secret_is_the_one_the_manifests_name():
    team = guide.team_submit()
    assert team.secret_name == m.AUTH_SECRET, "the Secret authOptions.secretName names"
    key, _ = team.secret_literal()
    assert key == m.AUTH_SECRET_KEY, "KubeRay reads the token from this key only"
    # The token command works and makes what Ray's own generator makes: 256 random bits in hex.
    # python is this interpreter here: the guide's `python` is whatever the reader's PATH has.
    command = shlex.split(team.token_command())
    assert command[0] == "python", command
    tokens = {
        subprocess.run(
            [sys.executable, *command[1:]], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(tokens) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", t) for t in tokens), tokens


def test_every_token_export_reads_that_secret_and_turns_token_mode_on():
    exports = guide.exports_everywhere()
    assert exports, "the guide exports no RAY_AUTH_* variables"
    read_secret = (
        f"kubectl get secret {m.AUTH_SECRET} -o jsonpath='{{.data.{m.AUTH_SECRET_KEY}}}'"
        " | base64 -d"
    )
    for name, value in exports:
        if name == "RAY_AUTH_MODE":
            assert value == "token", "Ray's job CLI sends the token only in token mode"
        elif name == "RAY_AUTH_TOKEN":
            assert guide.substitution(value) == read_secret, value
        else:
            pytest.fail(f"unexpected export {name}={value}")
    assert {name for name, _ in exports} == {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}


def test_the_team_submit_reaches_the_shipped_raycluster_and_its_entrypoint_fits():
    (cluster,) = m.rendered()["deploy/kuberay/raycluster"]
    team = guide.team_submit()
    # KubeRay names the head service <RayCluster name>-head-svc.
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (dashboard,) = [p["containerPort"] for p in head["ports"] if p["name"] == "dashboard"]
    local, remote = team.port_forward[3].split(":")
    assert team.port_forward[2] == f"svc/{cluster['metadata']['name']}-head-svc"
    assert int(remote) == dashboard
    flags = team.submit_flags()
    assert flags[flags.index("--address") + 1] == f"http://localhost:{local}"
    cfg = compose_entrypoint(team.entrypoint())
    validate_static(cfg)
    check_resources(cfg, m.ray_resources(cluster))
    assert cfg.output_dir.startswith(("s3://", "gs://")), "ray job submit needs a URI"
