"""A whole job killed with kill -9 mid-run (`python -m magpie_ray` and its engine actor), then
the same command again: it generates only what was not on disk, leaves what was alone, and the
rows it writes again are identical to the ones the killed job wrote (seeded per row, whatever
batch or invocation a row runs in).

What users run: the vLLM engine, the default batches in flight. The CLI joins the suite's local
Ray (`cluster.address`) instead of starting one of its own (ten seconds saved per run); the job
is its driver and the actors it started, and all of them die at once, as when its node goes
away.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from magpie_ray.steps.generate.seeds import row_uuid
from tests.actor_kills import actor_processes
from tests.helpers import read_parts, run_uuids

REPO = Path(__file__).resolve().parents[2]
N = 40


def _overrides(model: Path, out: Path) -> list[str]:
    return [
        "run_name=resume",
        "steps=[generate]",
        f"output_dir={out}",
        f"model.path={model}",
        "model.name=tiny-chat",
        "model.max_model_len=512",
        "engine.kv_cache_gib=0.25",
        f"generate.num_samples={N}",
        "generate.batch_size=2",
        "generate.instruction.max_tokens=32",
        "generate.response.max_tokens=48",
    ]


def test_killed_job_reruns_to_identical_rows(local_ray, tiny_model_path, tmp_path):
    # Checked against code that duplicates rows: with the generate step forgetting the rows on
    # disk, the rerun generated all 40 rows again (in other batches, so other part files) and
    # the invocation count check failed.
    out = tmp_path / "out"
    run_dir = out / "resume"
    address = f"cluster.address={local_ray.get_runtime_context().gcs_address}"
    command = [sys.executable, "-m", "magpie_ray", *_overrides(tiny_model_path, out), address]
    assert "engine=" not in " ".join(command), "the default engine (vLLM)"
    first = subprocess.Popen(
        command,
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parts = run_dir / "generated"
    try:
        deadline = time.monotonic() + 300
        while len(list(parts.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            assert first.poll() is None, "the first run ended before it could be killed"
            time.sleep(0.05)
    finally:
        # The driver and every actor of the job at once (Ray would end the actors of a dead
        # driver too, but a moment later: they could still write a part meanwhile).
        victims = [psutil.Process(first.pid), *actor_processes("GenerateActor")]
        os.killpg(first.pid, signal.SIGKILL)
        for proc in victims:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        first.wait()
        psutil.wait_procs(victims, timeout=30)
    kept, dropped = run_uuids(run_dir)
    assert 0 < len(kept) + len(dropped) < N, "the kill must land mid-run"
    assert len(set(kept + dropped)) == len(kept) + len(dropped)
    # One part the killed job finished is removed, as if the kill had come just before its
    # rename: the rerun writes its rows again, and they must be the same rows.
    removed = sorted(parts.glob("part-*.parquet"))[0]
    removed_rows = pq.read_table(removed).to_pylist()
    removed.unlink()
    done_before = len(kept) + len(dropped) - len(removed_rows)
    survivors = {p: p.read_bytes() for p in parts.glob("part-*.parquet")}

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    kept, dropped = run_uuids(run_dir)
    assert sorted(kept + dropped) == sorted(row_uuid("resume", i) for i in range(N))
    # Only what was not on disk was generated again, and what was stays as it was.
    match = re.search(
        r"this invocation: (\d+) rows generated \((\d+) already done\)", second.stdout
    )
    assert match, second.stdout[-2000:]
    assert (int(match.group(1)), int(match.group(2))) == (N - done_before, done_before)
    assert {p: p.read_bytes() for p in survivors} == survivors, "a part on disk was rewritten"
    again = {r["uuid"]: r for r in read_parts(parts)}
    assert [again[r["uuid"]] for r in removed_rows] == removed_rows, "rows differ on a rerun"
