"""Engine actors killed mid-run with what users run (the vLLM engine, the default batches in
flight): the same invocation ends with every row kept or dropped exactly once. (Tagger actors
killed mid-run: tests/steps/test_tag.py; a lost node: tests/e2e/test_two_nodes.py.)

`make test` kills the actor once, at half the rows; the chaos lane sweeps the kill across one
run (while the engine loads, a few rows, half, nearly all), then extends the run by four rows
(another engine start), which generates only the new ones.
"""

from __future__ import annotations

import pytest

from magpie_ray import pipeline
from magpie_ray.config import ClusterConfig
from magpie_ray.report import generate_line
from magpie_ray.steps.generate.seeds import row_uuid
from tests.actor_kills import BackgroundRun, kill_at, rows_on_disk
from tests.helpers import read_parts, run_uuids, tiny_config

N = 64
# Kill moments: "starting" while the actor loads its engine, else a count of rows on disk.
HALF = (N // 2,)
SWEEP = ("starting", N // 10, N // 2, N * 85 // 100)


def _expected(run_name: str, n: int) -> list[str]:
    return sorted(row_uuid(run_name, i) for i in range(n))


@pytest.mark.parametrize(
    "moments",
    [pytest.param(HALF, id="half"), pytest.param(SWEEP, id="sweep", marks=pytest.mark.chaos)],
)
def test_engine_actor_killed_mid_run_loses_no_row_and_reruns_add_only_new_rows(
    local_ray, tiny_model_path, tmp_path, moments
):
    # Checked against code that loses rows: with a restarted actor acknowledging its retried
    # calls without generating their rows and the generate step's sweep for missing rows off,
    # the half-way kill left 32 of 64 rows and the uuid check failed.
    cfg = tiny_config(tiny_model_path, tmp_path, run_name="kills", num_samples=N, batch_size=4)
    # What users run: the vLLM engine and the default rows in flight (4 batches per actor).
    assert cfg.engine.kind == "vllm"
    assert cfg.cluster.batches_in_flight == ClusterConfig().batches_in_flight > 1
    run_dir = tmp_path / "kills"

    def rows() -> int:
        return rows_on_disk(run_dir / "generated", run_dir / "dropped" / "generate")

    run = BackgroundRun(pipeline.run, cfg, config_yaml="run_name: kills\n")
    for moment in moments:
        if moment == "starting":
            # While the engine loads (as when a node is lost during start-up): a restart.
            assert kill_at(run, "GenerateActor", rows, 0, phase="starting") == 0
            continue
        # Each kill takes the rows in flight with it.
        at = kill_at(run, "GenerateActor", rows, moment)
        assert at is not None and at < N, f"the kill at {moment} rows landed after the run"
    result = run.join(timeout=600)

    kept, dropped = run_uuids(run_dir)
    assert sorted(kept + dropped) == _expected("kills", N), (
        f"every row exactly once after the same invocation: {len(kept)} kept + {len(dropped)}"
        f" dropped, {len(set(kept + dropped))} distinct, of {N}"
    )
    gen = result.generate
    assert result.incomplete is None and gen.rows_missing == 0
    assert (gen.rows_todo, gen.rows_processed) == (N, N)
    assert result.summary.requested_done == N
    assert result.summary.rows_written == len(kept)
    assert (run_dir / "config.yaml").read_text() == "run_name: kills\n"
    line = generate_line(gen)
    assert "engines busy" in line and "tokens per engine step (max_num_seqs 256)" in line
    rows_written = read_parts(run_dir / "generated")
    assert all(
        r["model"] == "tiny-chat" and r["instruction"] and r["response"] for r in rows_written
    )

    # The same command again does nothing (and starts no engine).
    again = pipeline.run(cfg)
    assert (again.generate.rows_todo, again.generate.rows_processed) == (0, 0)
    assert run_uuids(run_dir) == (kept, dropped)
    if moments != SWEEP:
        return
    # More samples generate only the new indices.
    cfg.generate.num_samples = N + 4
    more = pipeline.run(cfg)
    assert (more.generate.rows_todo, more.generate.rows_done_before) == (4, N)
    kept, dropped = run_uuids(run_dir)
    assert sorted(kept + dropped) == _expected("kills", N + 4)
