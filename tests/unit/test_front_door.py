"""The cluster's front door and the run folder: whatever a user types that the run cannot use
ends in one line naming it, what was tried and the fix, exit 2, before anything is written or
started (issue 32). Heads of another version and token-mode heads: tests/e2e/test_doors.py."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from magpie_ray.cluster import ClusterUnreachable, Target, check_address, target
from magpie_ray.config import ClusterConfig
from magpie_ray.console import _ConsoleFilter
from magpie_ray.storage import unwritable
from tests.e2e.local_cluster import free_ports

REPO = Path(__file__).resolve().parents[2]


def _unreachable(address: str, timeout_s: float = 2.0) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as err:
        check_address(Target(address, "cluster.address"), timeout_s)
    return str(err.value), time.monotonic() - started


def test_the_address_comes_from_the_config_then_ray_address_else_a_local_ray():
    assert target(ClusterConfig(address="10.0.0.5:6379"), {"RAY_ADDRESS": "x:1"}) == Target(
        "10.0.0.5:6379", "cluster.address"
    )
    assert target(ClusterConfig(), {"RAY_ADDRESS": "10.0.0.6:6379"}) == Target(
        "10.0.0.6:6379", "RAY_ADDRESS"
    )
    assert target(ClusterConfig(), {}) is None
    assert ClusterConfig().connect_timeout_s == 60


def test_nothing_listening_fails_within_the_timeout_naming_address_error_and_fix():
    (port,) = free_ports(1)
    message, took = _unreachable(f"127.0.0.1:{port}", timeout_s=3)
    assert took < 6, f"{took:.1f} s: the check must end within cluster.connect_timeout_s"
    assert "\n" not in message
    assert message.startswith(f"cluster.address=127.0.0.1:{port}: no Ray cluster answered")
    assert "cluster.connect_timeout_s=3 s" in message and "Connection refused" in message
    assert "Fix: check that the head is up" in message and "ray job submit" in message


def test_a_host_that_does_not_resolve_says_so():
    message, _ = _unreachable("no-such-head.invalid:6379")
    assert "the host name does not resolve" in message


def test_a_dashboard_url_is_named_as_the_address_of_ray_job_submit():
    message, took = _unreachable("http://10.0.0.5:8265")
    assert took < 1
    assert "is a dashboard URL, the address `ray job submit --address` takes" in message
    assert "HOST:6379" in message


def test_a_port_that_answers_http_is_not_taken_for_a_gcs():
    """A real HTTP server where the GCS should be (the dashboard's port, say)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        message, took = _unreachable(f"127.0.0.1:{server.server_address[1]}", timeout_s=2)
    finally:
        server.shutdown()
    assert took < 5
    assert "the port accepts connections but sent no Ray GCS reply" in message


@pytest.mark.parametrize("address", ["10.0.0.5", "10.0.0.5:gcs", ":6379"])
def test_an_address_without_a_port_is_named(address):
    message, took = _unreachable(address)
    assert took < 1 and "is not HOST:PORT" in message


def test_a_file_in_the_way_of_the_run_folder(tmp_path):
    (tmp_path / "out").write_text("")
    assert (
        unwritable(str(tmp_path / "out" / "demo")) == f"{tmp_path / 'out'} is a file, not a folder"
    )
    assert unwritable(str(tmp_path / "new" / "demo")) is None
    assert unwritable("s3://bucket/magpie/demo") is None


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs mount (needs root's mount; skips where the sandbox refuses it)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_mount_is_named(read_only_dir):
    assert (
        unwritable(str(read_only_dir / "demo")) == f"{read_only_dir} is on a read-only file system"
    )


def test_rays_token_advice_goes_to_the_log_file_and_its_real_warnings_to_the_console():
    import logging

    def record(message: str, level=logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("ray._private", level, "x.py", 1, message, None, None)

    console = _ConsoleFilter()
    assert not console.filter(
        record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=...")
    )
    assert console.filter(record("Actor died unexpectedly"))
    assert not console.filter(record("Started a local Ray instance.", logging.INFO))


def _cli(*args: str, env: dict | None = None, timeout: float = 120):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "magpie_ray", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return done, time.monotonic() - started


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single `magpie_ray: error:` line of a CLI that stopped with exit 2."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("magpie_ray: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


@pytest.mark.cli
def test_a_mistyped_cluster_address_stops_the_run_in_one_line_and_writes_nothing(tmp_path):
    (port,) = free_ports(1)
    done, took = _cli(
        "steps=[generate]",
        f"cluster.address=127.0.0.1:{port}",
        "cluster.connect_timeout_s=5",
        f"output_dir={tmp_path}",
    )
    line = _one_error_line(done)
    assert line.startswith(f"magpie_ray: error: cluster.address=127.0.0.1:{port}: no Ray cluster")
    assert "Connection refused" in line
    assert took < 60, f"{took:.0f} s"
    assert list(tmp_path.iterdir()) == [], "nothing may be written under the run folder"


@pytest.mark.cli
def test_a_read_only_output_dir_stops_the_run_in_one_line_before_ray_starts(read_only_dir):
    done, _ = _cli("steps=[generate]", f"output_dir={read_only_dir}")
    line = _one_error_line(done)
    assert f"the run folder {read_only_dir}/demo cannot be created or written" in line
    assert f"{read_only_dir} is on a read-only file system" in line
    assert "Started a local Ray" not in done.stdout + done.stderr


@pytest.mark.cli
def test_mode_check_reports_an_unreachable_cluster_as_a_failed_check(tmp_path):
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses():
        pytest.skip("a Ray runs on this machine: `auto` would find it")
    # RAY_TMPDIR: no `ray start` recorded there, as on a machine where Ray never ran.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path)
    done, took = _cli("mode=check", "output_dir=relative/x", "cluster.address=auto", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr, done.stderr
    assert "ok: config: values, paths and recipes" in done.stdout
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1, done.stdout
    assert failed[0].startswith("failed: cluster: cluster.address=auto looks for a Ray")
    assert "Could not find any running Ray instance" in failed[0]
    assert "checks failed; nothing was loaded or run" in done.stderr
    assert took < 60
