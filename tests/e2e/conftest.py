"""The suite's one two-node Ray cluster, shared by the tests that need `ray start` nodes and
`ray job submit` (test_job_submit, test_placement, test_two_nodes): starting a head and a worker
costs about 15 s of CPU here, and each of those tests used to start its own.

The cluster is the secure one the deploy guide sets up: token-auth mode with a token made by the
guide's own command. Each node advertises two GPUs (Ray only counts them: placement groups on
CPUs), two `bundle_slot`s (the placement test's engines) and one `engine_slot` (one engine actor
per node in the lost-node test). A test that kills the worker node leaves it dead; the next test
asking for `two_nodes` gets a new worker. Tests using the cluster run last in the session
(tests/conftest.py orders them), so it is idle for as short a time as possible.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.deploy import guide
from tests.e2e.local_cluster import (
    VENV_BIN,
    Cluster,
    auth_headers,
    cluster_processes,
    start_head,
    start_worker,
    teardown,
)

NODE_RESOURCES = {"engine_slot": 1, "bundle_slot": 2}
NODE_GPUS = 2


def guide_token() -> str:
    """A token made by the command the guide stores in the Secret (deploy/README.md, section 2),
    run by bash with this virtualenv's python first on PATH."""
    made = subprocess.run(
        ["bash", "-c", guide.team_submit().token_command()],
        env={"PATH": f"{VENV_BIN}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token), f"the guide's token command made {token!r}"
    return token


def state(cluster: Cluster, resource: str, **params) -> list[dict]:
    """Ray's state API (`/api/v0/<resource>` on the dashboard), with the cluster's token: this
    process runs its own local Ray without auth, so it asks over HTTP."""
    query = urllib.parse.urlencode({"limit": 1000, "detail": "true", **params})
    request = urllib.request.Request(
        f"{cluster.dashboard_url}/api/v0/{resource}?{query}", headers=auth_headers(cluster)
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.load(answer)
    return body["data"]["result"]["result"]


def alive_nodes(cluster: Cluster) -> set[str]:
    return {n["node_id"] for n in state(cluster, "nodes") if n["state"] == "ALIVE"}


@dataclass
class TwoNodes:
    """The shared cluster and its live worker node."""

    cluster: Cluster
    worker_dir: Path | None = None  # the live worker's temp dir (under the head's)
    worker_metrics_port: int | None = None
    workers_started: int = field(default=0)

    @property
    def metrics_ports(self) -> list[int]:
        """Every live node's Prometheus endpoint: an actor may run on either node."""
        return [self.cluster.metrics_port, self.worker_metrics_port]

    def worker_raylets(self) -> list[psutil.Process]:
        """The live worker node's raylet (one, or none once a test killed it)."""
        needle = f"{self.worker_dir}/"
        found = []
        for proc in cluster_processes(self.cluster):
            try:
                if proc.name() == "raylet" and needle in " ".join(proc.cmdline()):
                    found.append(proc)
            except psutil.Error:  # a short-lived process that ended while listing
                continue
        return found

    def ensure_worker(self, timeout_s: float = 120) -> None:
        """A live worker node: a new one when the last was killed; returns once the head
        counts exactly two live nodes (a killed node is declared dead after its health checks
        fail, some seconds after its raylet died)."""
        if self.worker_dir is None or not self.worker_raylets():
            self.workers_started += 1
            name = f"worker-{self.workers_started}"
            self.worker_metrics_port = start_worker(
                self.cluster, name, num_gpus=NODE_GPUS, resources=NODE_RESOURCES
            )
            self.worker_dir = self.cluster.temp_dir / name
        deadline = time.monotonic() + timeout_s
        while len(nodes := alive_nodes(self.cluster)) != 2:
            assert time.monotonic() < deadline, f"the cluster has live nodes {nodes}, not two"
            time.sleep(1)


@pytest.fixture(scope="session")
def shared_cluster():
    cluster = start_head(
        num_gpus=NODE_GPUS,
        resources=NODE_RESOURCES,
        auth_token=guide_token(),
        # Ray Data dispatches batches as soon as one actor of a pool is up; on a loaded machine
        # one engine can then finish every row before the second is placed. Waiting for the
        # whole pool makes "one engine per node" a property of the run, not of timing.
        extra_env={"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"},
    )
    nodes = TwoNodes(cluster)
    try:
        yield nodes
    finally:
        teardown(cluster)


@pytest.fixture
def two_nodes(shared_cluster) -> TwoNodes:
    """The shared cluster with a head and a live worker node."""
    shared_cluster.ensure_worker()
    return shared_cluster
