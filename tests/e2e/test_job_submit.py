"""`ray job submit` end to end, the secure way deploy/README.md tells it: a real Ray head started
with `ray start` in token-auth mode, its token made by the guide's own command, the guide's
exports and `ray job submit` line (address and Hydra overrides swapped for the local head and
the tiny model, `--working-dir` added: this head has no image with the package). Without the
token, or with a wrong one, the submission is refused and no job exists; with it the job
succeeds, writes every row, and leaves no secret in its run folder.

The cluster is the suite's shared two-node one in token mode (tests/e2e/conftest.py); its
teardown ends only the processes that cluster started.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from magpie_ray.redact import REDACTED
from magpie_ray.steps.generate.seeds import row_uuid
from tests.deploy import guide
from tests.e2e.conftest import TwoNodes
from tests.e2e.local_cluster import (
    Cluster,
    client_env,
    job_client,
    job_submit,
    submit,
    wait_for_job,
)
from tests.helpers import read_parts, run_uuids, scraped_counters

NUM_SAMPLES = 8
# A credential planted in the job's actor_env: the run must use it and never write it down.
PLANTED_NAME, PLANTED_VALUE = "MAGPIE_TEST_API_KEY", "planted-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def guide_submit(cluster: Cluster, overrides: list[str], token: str | None):
    """The guide's `ray job submit` from a shell that ran the guide's exports with `token` as
    the Secret's content (None: a shell that never ran them)."""
    team = guide.team_submit()
    auth = {}
    if token is not None:
        for name, value in team.exports.items():
            # The one export the test cannot run: it reads the Secret from Kubernetes.
            auth[name] = token if name == "RAY_AUTH_TOKEN" else value
            assert "$(" not in auth[name], f"the test cannot run `export {name}={value}`"
    flags = team.submit_flags()
    assert flags[flags.index("--address") + 1].startswith("http://localhost:")
    flags[flags.index("--address") + 1] = cluster.dashboard_url
    return job_submit(cluster, overrides, client_env(cluster, auth), flags)


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
        "steps=[generate]",
        f"output_dir={output_dir}",
    ]


def uploaded_working_dirs(cluster: Cluster) -> list[Path]:
    root = "session_latest/runtime_resources/working_dir_files/_ray_pkg_*"
    return [p for p in cluster.temp_dir.glob(root) if p.is_dir()]


def test_guide_submit_is_refused_without_the_token_and_writes_every_row_with_it(
    two_nodes: TwoNodes, tiny_model_path, tmp_path
):
    ray_cluster = two_nodes.cluster
    output_dir = tmp_path / "out"
    overrides = [
        *job_overrides(tiny_model_path, str(output_dir)),
        f"+cluster.actor_env.{PLANTED_NAME}={PLANTED_VALUE}",
    ]
    refused = set()
    for token, answer in [(None, "Authentication required"), ("0" * 64, "Authentication failed")]:
        submission_id, done = guide_submit(ray_cluster, overrides, token)
        output = done.stdout + done.stderr
        assert done.returncode != 0 and answer in output, (
            f"a submission with token {token!r} must be refused ({answer}); it exited "
            f"{done.returncode}:\n{output}"
        )
        refused.add(submission_id)
    jobs = {job.submission_id for job in job_client(ray_cluster).list_jobs()}
    assert not jobs & refused, f"refused submissions created jobs: {jobs & refused}"

    submission_id, done = guide_submit(ray_cluster, overrides, ray_cluster.auth_token)
    assert done.returncode == 0, (
        f"`ray job submit` with the token failed:\n{done.stdout}\n{done.stderr}"
    )
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
    # Ray metrics on the nodes' Prometheus endpoints: every row counted once, kept or dropped.
    wanted = {"magpie_rows_generated": len(kept), "magpie_output_tokens": 1}
    counted = scraped_counters(two_nodes.metrics_ports, "jobtest", wanted)
    dropped_counted = sum(v for k, v in counted.items() if k.startswith("magpie_rows_dropped["))
    assert counted.get("magpie_rows_generated") == len(kept), counted
    assert dropped_counted == len(dropped), counted
    assert counted["magpie_engine_busy_seconds"] > 0, counted
    for row in read_parts(run_dir / "generated"):
        assert row["instruction"].strip(), f"empty instruction in kept row {row['uuid']}"
        assert row["response"].strip(), f"empty response in kept row {row['uuid']}"
        assert row["model"] == "tiny-chat", row

    # No secret in the run folder (published with the data): the planted credential is written
    # redacted, and neither it nor the cluster's token is in any file.
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["cluster"]["actor_env"][PLANTED_NAME] == REDACTED, written["cluster"]
    assert written["cluster"]["actor_env"]["OMP_NUM_THREADS"] == "1", "non-secrets stay"
    for path in (p for p in run_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in (PLANTED_VALUE, ray_cluster.auth_token):
            assert secret.encode() not in data, f"{path} holds a secret"

    # The upload honours .gitignore: the package, not the virtualenv or old outputs.
    packages = uploaded_working_dirs(ray_cluster)
    assert packages, "the head unpacked no working dir"
    package = max(packages, key=lambda p: p.stat().st_mtime)
    assert (package / "magpie_ray" / "__main__.py").is_file()
    assert not (package / ".venv").exists() and not (package / "outputs").exists()
    size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    assert size < 5 * 1024**2, f"working dir upload is {size / 1024**2:.1f} MiB"


def test_job_submit_rejects_relative_output_dir(two_nodes: TwoNodes, tiny_model_path):
    submission_id = submit(two_nodes.cluster, job_overrides(tiny_model_path, "outputs"))
    status, logs = wait_for_job(two_nodes.cluster, submission_id)
    assert status == "FAILED", f"job {submission_id} ended {status}; its logs:\n{logs}"
    assert "absolute path or a URI" in logs, f"no hint about output_dir in the logs:\n{logs}"
