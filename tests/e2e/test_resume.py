"""Kill `python -m magpie_ray` mid-run (the whole process group), rerun the same command."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from magpie_ray.steps.generate.seeds import row_uuid
from tests.helpers import run_uuids

REPO = Path(__file__).resolve().parents[2]
N = 40


def _command(model: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "magpie_ray",
        "run_name=resume",
        "steps=[generate]",
        f"output_dir={out}",
        f"model.path={model}",
        "model.name=tiny-chat",
        "model.max_model_len=512",
        "engine=hf",
        f"generate.num_samples={N}",
        "generate.batch_size=2",
        "generate.instruction.max_tokens=32",
        "generate.response.max_tokens=48",
    ]


def test_killed_run_resumes_without_loss_or_duplicates(tiny_model_path, tmp_path):
    out = tmp_path / "out"
    parts = out / "resume" / "generated"
    env = dict(os.environ, RAY_DEDUP_LOGS="0")
    first = subprocess.Popen(
        _command(tiny_model_path, out),
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(parts.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            assert first.poll() is None, "the first run ended before it could be killed"
            time.sleep(0.2)
    finally:
        # The whole job dies at once, as when its node goes away: the driver, the local Ray it
        # started and the engine actor (Ray workers leave the driver's process group).
        family = psutil.Process(first.pid).children(recursive=True)
        os.killpg(first.pid, signal.SIGKILL)
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        first.wait()
        psutil.wait_procs(family, timeout=30)
    kept, dropped = run_uuids(out / "resume")
    done_before = len(kept) + len(dropped)
    assert 0 < done_before < N, "the kill must land mid-run"
    assert len(set(kept + dropped)) == done_before

    second = subprocess.run(
        _command(tiny_model_path, out),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    kept, dropped = run_uuids(out / "resume")
    assert sorted(kept + dropped) == sorted(row_uuid("resume", i) for i in range(N))
    # Only what was not on disk was generated again.
    match = re.search(
        r"this invocation: (\d+) rows generated \((\d+) already done\)", second.stdout
    )
    assert match, second.stdout[-2000:]
    assert (int(match.group(1)), int(match.group(2))) == (N - done_before, done_before)
