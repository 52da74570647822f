"""The cluster's front door against a real head (the suite's token-mode cluster,
tests/e2e/conftest.py): reached without its token, or running another Python than this client,
`python -m magpie_ray` stops with one line and exit 2 before it writes or starts anything, where
`ray.init` would end in a traceback (issue 32). Addresses that do not answer at all:
tests/unit/test_front_door.py."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.conftest import TwoNodes
from tests.e2e.local_cluster import Cluster, auth_env, client_env

REPO = Path(__file__).resolve().parents[2]


def _run(cluster: Cluster, env: dict[str, str], output_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "magpie_ray",
            "steps=[generate]",
            f"cluster.address={cluster.gcs_address}",
            f"output_dir={output_dir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _error_line(done: subprocess.CompletedProcess, output_dir: Path) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("magpie_ray: error: "), done.stderr[-3000:]
    assert not output_dir.exists(), "nothing may be written before the cluster answers"
    return lines[0]


def test_a_token_mode_cluster_reached_without_the_token(two_nodes: TwoNodes, tmp_path):
    cluster = two_nodes.cluster
    for auth in ({"RAY_AUTH_MODE": "disabled"}, {}):  # auth off, or Ray's default with no token
        done = _run(cluster, client_env(cluster, auth), tmp_path / "out")
        line = _error_line(done, tmp_path / "out")
        assert f"cluster.address={cluster.gcs_address}: the cluster runs with token" in line
        assert "Fix: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN" in line


@contextmanager
def _head_claims_python(cluster: Cluster, version: str):
    """The head's recorded cluster metadata (what `ray.init` checks its client against) says
    it runs Python `version`, as a head started from another image would; restored after.
    Written over gRPC with the cluster's token, from a process that holds it."""
    script = """
import json, sys, grpc
from ray._private.authentication.grpc_authentication_client_interceptor import (
    SyncAuthenticationMetadataClientInterceptor,
)
from ray.core.generated import gcs_service_pb2 as pb, gcs_service_pb2_grpc as rpc
address, version = sys.argv[1:]
channel = grpc.intercept_channel(
    grpc.insecure_channel(address), SyncAuthenticationMetadataClientInterceptor()
)
kv = rpc.InternalKVGcsServiceStub(channel)
key = dict(key=b"CLUSTER_METADATA", namespace=b"cluster")
metadata = json.loads(kv.InternalKVGet(pb.InternalKVGetRequest(**key), timeout=30).value)
print(metadata["python_version"])
metadata["python_version"] = version
value = json.dumps(metadata).encode()
kv.InternalKVPut(pb.InternalKVPutRequest(**key, value=value, overwrite=True), timeout=30)
"""
    env = client_env(cluster, auth_env(cluster.auth_token))

    def claim(python: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, cluster.gcs_address, python],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout.strip()

    real = claim(version)
    try:
        yield real
    finally:
        claim(real)


def test_a_head_on_another_python_is_named_in_rays_own_words(two_nodes: TwoNodes, tmp_path):
    cluster = two_nodes.cluster
    with _head_claims_python(cluster, "3.12.99") as real:
        done = _run(cluster, client_env(cluster, auth_env(cluster.auth_token)), tmp_path / "out")
    line = _error_line(done, tmp_path / "out")
    assert "Version mismatch: The cluster was started with: Ray: " in line, line
    assert "Python: 3.12.99 This process on this machine was started with:" in line
    assert line.rstrip().endswith(
        f"Python: {real}. Fix: run magpie_ray with the cluster's Ray and Python (its image),"
        " or submit the job with `ray job submit`"
    ), line
