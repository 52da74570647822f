"""`ray job submit` end to end: a real Ray head started with `ray start`, the repo uploaded as the
job's working dir, `python -m magpie_ray` run as the entrypoint against the tiny model.

The cluster is this module's own (free ports, its own short temp dir) and teardown ends only the
processes that cluster started, never `ray stop`, which would end every Ray on the machine.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from magpie_ray.steps.seeds import row_uuid
from tests.helpers import read_parts, run_uuids

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"
JOB_TIMEOUT_S = 360
NUM_SAMPLES = 8


@dataclass(frozen=True)
class Cluster:
    temp_dir: Path
    dashboard_url: str
    env: dict[str, str]


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


def cluster_env(temp_dir: Path) -> dict[str, str]:
    """This process's env (HOME, MAGPIE_RAY_CACHE...) less RAY_ADDRESS, plus the engine settings
    of conftest: the job's driver and actors inherit them from the raylet."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_AUTH_MODE="disabled",
        OMP_NUM_THREADS="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        HF_HUB_OFFLINE="1",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # Inherited by everything the cluster starts: how teardown finds what is ours.
        MAGPIE_RAY_TEST_CLUSTER=str(temp_dir),
    )
    return env


def cluster_processes(cluster: Cluster) -> list[psutil.Process]:
    """Processes of this cluster: those naming its temp dir or GCS address, those carrying its
    env marker, and all their descendants (workers rename themselves `ray::...`)."""
    markers = [str(cluster.temp_dir)]
    address_file = cluster.temp_dir / "ray_current_cluster"  # the GCS address, by `ray start`
    if address_file.is_file() and address_file.read_text().strip():
        markers.append(address_file.read_text().strip())
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


@pytest.fixture(scope="module")
def ray_cluster():
    temp_dir = Path(tempfile.mkdtemp(prefix="mr-", dir="/tmp"))
    (gcs, dashboard, client, node_manager, object_manager, agent_http, agent_grpc, metrics,
     runtime_env_agent) = free_ports(9)  # fmt: skip
    min_worker, max_worker = free_port_range(64)
    cluster = Cluster(
        temp_dir=temp_dir,
        dashboard_url=f"http://127.0.0.1:{dashboard}",
        env=cluster_env(temp_dir),
    )
    start = [
        str(RAY), "start", "--head",
        f"--port={gcs}",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env_agent}",
        f"--min-worker-port={min_worker}",
        f"--max-worker-port={max_worker}",
        f"--temp-dir={temp_dir}",
        "--num-cpus=2",
        f"--object-store-memory={512 * 1024**2}",
        "--include-dashboard=true",
        "--disable-usage-stats",
    ]  # fmt: skip
    try:
        started = subprocess.run(
            start, env=cluster.env, capture_output=True, text=True, timeout=180
        )
        assert started.returncode == 0, (
            f"`ray start` failed ({started.returncode}):\n{started.stdout}\n{started.stderr}"
        )
        yield cluster
    finally:
        stop_cluster(cluster)
        survivors = [describe(p) for p in cluster_processes(cluster) if p.is_running()]
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, "processes of the test cluster survived teardown:\n" + "\n".join(
            survivors
        )


def submit(cluster: Cluster, overrides: list[str]) -> str:
    """`ray job submit --no-wait` of `python -m magpie_ray` with the repo as working dir."""
    submission_id = f"magpie-{uuid.uuid4().hex[:8]}"
    cmd = [
        str(RAY), "job", "submit",
        "--address", cluster.dashboard_url,
        "--working-dir", str(REPO),
        "--submission-id", submission_id,
        "--no-wait",
        "--", "python", "-m", "magpie_ray", *overrides,
    ]  # fmt: skip
    done = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"`ray job submit` failed:\n{done.stdout}\n{done.stderr}"
    return submission_id


def wait_for_job(cluster: Cluster, submission_id: str) -> tuple[str, str]:
    """(final status, logs) once the job is SUCCEEDED, FAILED or STOPPED."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard_url)
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


def job_overrides(model_path: Path, output_dir: str) -> list[str]:
    return [
        f"model.path={model_path}",
        "model.name=tiny-chat",
        "model.max_model_len=512",
        "engine.kv_cache_gib=0.25",
        f"generate.num_samples={NUM_SAMPLES}",
        "generate.batch_size=4",
        "generate.instruction.max_tokens=32",
        "generate.response.max_tokens=48",
        "run_name=jobtest",
        f"output_dir={output_dir}",
    ]


def uploaded_working_dirs(cluster: Cluster) -> list[Path]:
    root = "session_latest/runtime_resources/working_dir_files/_ray_pkg_*"
    return [p for p in cluster.temp_dir.glob(root) if p.is_dir()]


def test_job_submit_writes_every_row(ray_cluster, tiny_model_path, tmp_path):
    output_dir = tmp_path / "out"
    submission_id = submit(ray_cluster, job_overrides(tiny_model_path, str(output_dir)))
    status, logs = wait_for_job(ray_cluster, submission_id)
    assert status == "SUCCEEDED", f"job {submission_id} ended {status}; its logs:\n{logs}"
    assert "rows written:" in logs, f"the job printed no run summary; its logs:\n{logs}"

    run_dir = output_dir / "jobtest"
    assert (run_dir / "config.yaml").is_file(), f"no config.yaml in {run_dir}"
    assert list((run_dir / "generated").glob("part-*.parquet")), f"no parts in {run_dir}"
    kept, dropped = run_uuids(run_dir)
    expected = sorted(row_uuid("jobtest", i) for i in range(NUM_SAMPLES))
    assert sorted(kept + dropped) == expected, (
        f"every sample must be written once, kept or dropped: kept {len(kept)}, "
        f"dropped {len(dropped)}, expected {NUM_SAMPLES}"
    )
    for row in read_parts(run_dir / "generated"):
        assert row["instruction"].strip(), f"empty instruction in kept row {row['uuid']}"
        assert row["response"].strip(), f"empty response in kept row {row['uuid']}"
        assert row["model"] == "tiny-chat", row

    # The upload honours .gitignore: the package, not the virtualenv or old outputs.
    packages = uploaded_working_dirs(ray_cluster)
    assert len(packages) == 1, f"expected one unpacked working dir, found {packages}"
    (package,) = packages
    assert (package / "magpie_ray" / "__main__.py").is_file()
    assert not (package / ".venv").exists() and not (package / "outputs").exists()
    size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    assert size < 5 * 1024**2, f"working dir upload is {size / 1024**2:.1f} MiB"


def test_job_submit_rejects_relative_output_dir(ray_cluster, tiny_model_path):
    submission_id = submit(ray_cluster, job_overrides(tiny_model_path, "outputs"))
    status, logs = wait_for_job(ray_cluster, submission_id)
    assert status == "FAILED", f"job {submission_id} ended {status}; its logs:\n{logs}"
    assert "absolute path or a URI" in logs, f"no hint about output_dir in the logs:\n{logs}"
