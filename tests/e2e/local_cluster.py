"""Private Ray clusters for end-to-end tests: `ray start` nodes on free ports, each with its own
short temp dir, `ray job submit` against them, and a teardown that ends only their processes,
never `ray stop`, which would end every Ray on the machine.

Every process a cluster starts inherits MAGPIE_RAY_TEST_CLUSTER=<head temp dir>, and every node's
temp dir lies under the head's, so teardown finds them all by that marker, by the temp dir in
their command lines, or as descendants of those.

Clusters run with RAY_AUTH_MODE=disabled unless started with an `auth_token`: then in token mode,
every process of the cluster holding the token in RAY_AUTH_TOKEN (as KubeRay's authOptions sets
up every Ray container), and clients must send it (`client_env`, `auth_headers`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"
JOB_TIMEOUT_S = 360


@dataclass(frozen=True)
class Cluster:
    temp_dir: Path
    dashboard_url: str
    gcs_address: str
    env: dict[str, str]
    auth_token: str | None = None  # set: the cluster runs in token-auth mode with this token
    metrics_port: int | None = None  # the head's Prometheus endpoint (Ray metrics)


def free_ports(count: int) -> list[int]:
    """Ports free right now, held together while picking so that they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port_range(size: int) -> tuple[int, int]:
    """A run of `size` free ports below Linux's ephemeral range (where free_ports draws from)."""
    for _ in range(100):
        start = random.randrange(15000, 32000 - size)
        sockets = []
        try:
            for port in range(start, start + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return start, start + size - 1
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no run of {size} free ports found")


def _without_ray_auth_and_address(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_AUTH_")}


def auth_env(auth_token: str | None) -> dict[str, str]:
    """RAY_AUTH_* of a process that holds `auth_token` (token mode), or of one in a cluster
    without auth."""
    if auth_token is None:
        return {"RAY_AUTH_MODE": "disabled"}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": auth_token}


def cluster_env(temp_dir: Path, auth_token: str | None = None) -> dict[str, str]:
    """This process's env (HOME, MAGPIE_RAY_CACHE...) less RAY_ADDRESS and RAY_AUTH_*, plus the
    auth mode (`auth_env`) and the engine settings of conftest: the job's driver and actors
    inherit them from the raylet."""
    env = _without_ray_auth_and_address(os.environ)
    env.update(auth_env(auth_token))
    env.update(
        OMP_NUM_THREADS="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        HF_HUB_OFFLINE="1",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # Inherited by everything the cluster starts: how teardown finds what is ours.
        MAGPIE_RAY_TEST_CLUSTER=str(temp_dir),
    )
    return env


def _node_ports() -> list[str]:
    """`ray start` flags giving one node its own ports."""
    (node_manager, object_manager, agent_http, agent_grpc, metrics,
     runtime_env_agent) = free_ports(6)  # fmt: skip
    min_worker, max_worker = free_port_range(64)
    return [
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env_agent}",
        f"--min-worker-port={min_worker}",
        f"--max-worker-port={max_worker}",
    ]


def _resource_flags(
    num_cpus: int, resources: dict[str, float] | None, num_gpus: int = 0
) -> list[str]:
    flags = [f"--num-cpus={num_cpus}", f"--object-store-memory={512 * 1024**2}"]
    if num_gpus:
        flags.append(f"--num-gpus={num_gpus}")  # advertised only: placement tests on CPUs
    if resources:
        flags.append(f"--resources={json.dumps(resources)}")
    return flags


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    started = subprocess.run(
        [str(RAY), "start", *args, "--disable-usage-stats"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert started.returncode == 0, (
        f"`ray start` failed ({started.returncode}):\n{started.stdout}\n{started.stderr}"
    )


def start_head(
    num_cpus: int = 2,
    resources: dict[str, float] | None = None,
    extra_env: dict[str, str] | None = None,
    auth_token: str | None = None,
    num_gpus: int = 0,
) -> Cluster:
    """`ray start --head` with its own temp dir and ports; `extra_env` reaches every process of
    the cluster, jobs included; with `auth_token`, in token-auth mode with that token. Stop it
    with `teardown`."""
    temp_dir = Path(tempfile.mkdtemp(prefix="mr-", dir="/tmp"))
    gcs, dashboard, client = free_ports(3)
    node_ports = _node_ports()
    cluster = Cluster(
        temp_dir=temp_dir,
        dashboard_url=f"http://127.0.0.1:{dashboard}",
        gcs_address=f"127.0.0.1:{gcs}",
        env={**cluster_env(temp_dir, auth_token), **(extra_env or {})},
        auth_token=auth_token,
        metrics_port=_metrics_port(node_ports),
    )
    try:
        _ray_start(
            [
                "--head",
                f"--port={gcs}",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
                *node_ports,
                f"--temp-dir={temp_dir}",
                *_resource_flags(num_cpus, resources, num_gpus),
                "--include-dashboard=true",
            ],
            cluster.env,
        )
    except BaseException:
        teardown(cluster)
        raise
    # The address the GCS advertises (the node's IP), as written by `ray start`.
    address_file = temp_dir / "ray_current_cluster"
    if address_file.is_file() and address_file.read_text().strip():
        cluster = dataclasses.replace(cluster, gcs_address=address_file.read_text().strip())
    return cluster


def start_worker(
    cluster: Cluster,
    name: str,
    num_cpus: int = 2,
    resources: dict[str, float] | None = None,
    num_gpus: int = 0,
) -> int:
    """A second Ray node on this machine: `ray start --address` with its own temp dir (under
    the head's) and its own ports; returns the node's Prometheus port (Ray metrics)."""
    temp_dir = cluster.temp_dir / name
    temp_dir.mkdir()
    node_ports = _node_ports()
    _ray_start(
        [
            f"--address={cluster.gcs_address}",
            *node_ports,
            f"--temp-dir={temp_dir}",
            *_resource_flags(num_cpus, resources, num_gpus),
        ],
        cluster.env,
    )
    return _metrics_port(node_ports)


def _metrics_port(node_ports: list[str]) -> int:
    flag = next(f for f in node_ports if f.startswith("--metrics-export-port="))
    return int(flag.split("=", 1)[1])


def cluster_processes(cluster: Cluster) -> list[psutil.Process]:
    """Processes of this cluster: those naming its temp dir or GCS address, those carrying its
    env marker, and all their descendants (workers rename themselves `ray::...`)."""
    markers = [str(cluster.temp_dir), cluster.gcs_address]
    me = psutil.Process()
    exclude = {me.pid, *(p.pid for p in me.parents())}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in exclude:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        ours = any(m in cmdline for m in markers)
        if not ours:
            try:
                ours = proc.environ().get("MAGPIE_RAY_TEST_CLUSTER") == str(cluster.temp_dir)
            except (psutil.Error, OSError):
                ours = False
        if ours:
            found[proc.pid] = proc
    for proc in list(found.values()):
        try:
            for child in proc.children(recursive=True):
                if child.pid not in exclude:
                    found.setdefault(child.pid, child)
        except psutil.Error:
            pass
    return list(found.values())


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())}"
    except psutil.Error:
        return f"{proc.pid} (gone while listing)"


def stop_cluster(cluster: Cluster) -> None:
    """SIGTERM, then SIGKILL after a short grace: gcs_server ignores SIGTERM and the raylet
    drains for 10 s, which a throwaway cluster does not need. Everything is listed before any
    signal, since workers orphaned by their raylet no longer show what cluster they belong to."""
    for _ in range(3):
        procs = cluster_processes(cluster)
        if not procs:
            return
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=3)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)


def teardown(cluster: Cluster) -> None:
    """Stop every process of the cluster, remove its temp dirs, fail if anything survived."""
    stop_cluster(cluster)
    survivors = [describe(p) for p in cluster_processes(cluster) if p.is_running()]
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    assert not survivors, "processes of the test cluster survived teardown:\n" + "\n".join(
        survivors
    )


def client_env(cluster: Cluster, auth: Mapping[str, str]) -> dict[str, str]:
    """The env of a shell that talks to the cluster from outside: the cluster's env without its
    RAY_AUTH_* (a client holds only what it was given), plus `auth`."""
    return {**_without_ray_auth_and_address(cluster.env), **auth}


def auth_headers(cluster: Cluster) -> dict[str, str]:
    """HTTP headers that carry the cluster's token, for a client in this process (whose own
    RAY_AUTH_MODE conftest keeps disabled)."""
    return {"Authorization": f"Bearer {cluster.auth_token}"} if cluster.auth_token else {}


def job_submit(
    cluster: Cluster, overrides: list[str], env: Mapping[str, str], flags: Sequence[str] = ()
) -> tuple[str, subprocess.CompletedProcess]:
    """`ray job submit FLAGS --working-dir REPO --submission-id ID --no-wait -- python -m
    magpie_ray OVERRIDES` run with `env`, as is: (submission id, the finished CLI). `flags`
    default to `--address <the head's dashboard>`."""
    submission_id = f"magpie-{uuid.uuid4().hex[:8]}"
    cmd = [
        str(RAY), "job", "submit",
        *(flags or ["--address", cluster.dashboard_url]),
        "--working-dir", str(REPO),
        "--submission-id", submission_id,
        "--no-wait",
        "--", "python", "-m", "magpie_ray", *overrides,
    ]  # fmt: skip
    done = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=120)
    return submission_id, done


def submit(cluster: Cluster, overrides: list[str]) -> str:
    """`ray job submit --no-wait` of `python -m magpie_ray` with the repo as working dir, from a
    client holding the cluster's token when it has one; fails the test if it is refused."""
    env = client_env(cluster, auth_env(cluster.auth_token))
    submission_id, done = job_submit(cluster, overrides, env)
    assert done.returncode == 0, f"`ray job submit` failed:\n{done.stdout}\n{done.stderr}"
    return submission_id


def job_client(cluster: Cluster):
    """Ray's JobSubmissionClient for the cluster, with its token when it has one."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard_url, headers=auth_headers(cluster))


def wait_for_job(cluster: Cluster, submission_id: str) -> tuple[str, str]:
    """(final status, logs) once the job is SUCCEEDED, FAILED or STOPPED."""
    client = job_client(cluster)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        status = client.get_job_status(submission_id)
        if status.is_terminal():
            break
        if time.monotonic() > deadline:
            client.stop_job(submission_id)
            logs = client.get_job_logs(submission_id)
            pytest.fail(f"job {submission_id} still {status} after {JOB_TIMEOUT_S}s:\n{logs}")
        time.sleep(2)
    return str(status.value), client.get_job_logs(submission_id)
