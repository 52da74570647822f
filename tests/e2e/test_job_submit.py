"""`ray job submit` end to end: a real Ray head started with `ray start`, the repo uploaded as the
job's working dir, `python -m magpie_ray` run as the entrypoint against the tiny model.

The cluster is this module's own (free ports, its own short temp dir; tests/e2e/local_cluster.py)
and teardown ends only the processes that cluster started.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from magpie_ray.steps.generate.seeds import row_uuid
from tests.e2e.local_cluster import Cluster, start_head, submit, teardown, wait_for_job
from tests.helpers import read_parts, run_uuids

NUM_SAMPLES = 8


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = start_head(num_cpus=2)
    try:
        yield cluster
    finally:
        teardown(cluster)


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
