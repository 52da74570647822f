"""An engine that dies mid-run, with what users run (the vLLM engine, the default batches in
flight): its actor exits, Ray restarts it with a fresh engine, and the same invocation ends with
every row kept or dropped exactly once (issue 15).

"Kill the engine" here is real: vLLM's engine core runs in a process of its own
(VLLM_ENABLE_V1_MULTIPROCESSING=1, vLLM's default and what GPUs run; our CPU setting keeps the
core in the actor's process for a fast start) and the test SIGKILLs that process, never the
actor. (The actor killed instead: tests/e2e/test_actor_deaths.py.) Each kill costs an actor
start with a core process of its own: about a minute and a half on a loaded 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from magpie_ray import pipeline
from magpie_ray.config import ClusterConfig
from magpie_ray.steps.generate.seeds import row_uuid
from tests.actor_kills import BackgroundRun, kill_engine_core_at, rows_on_disk
from tests.helpers import run_uuids, tiny_config

N = 32


def _actor_log_lines(ray, needle: str) -> list[str]:
    """Lines of this Ray session's worker logs (where actors' stderr goes) that hold `needle`."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    return [
        line
        for path in sorted(logs.glob("worker-*.err"))
        for line in path.read_text(errors="replace").splitlines()
        if needle in line
    ]


def test_engine_core_killed_at_two_moments_ends_its_actor_and_loses_no_row(
    local_ray, tiny_model_path, tmp_path
):
    cfg = tiny_config(tiny_model_path, tmp_path, run_name="corekills", num_samples=N)
    assert cfg.engine.kind == "vllm"
    assert cfg.cluster.batches_in_flight == ClusterConfig().batches_in_flight > 1
    cfg.cluster.actor_env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    run_dir = tmp_path / "corekills"

    def rows() -> int:
        return rows_on_disk(run_dir / "generated", run_dir / "dropped" / "generate")

    needle = "died mid-run (EngineDeadError"
    deaths_before = len(_actor_log_lines(local_ray, needle))
    run = BackgroundRun(pipeline.run, cfg)
    # A few rows written, then over half: each kill takes the actor's rows in flight with it.
    for threshold, next_threshold in ((N // 8, N * 6 // 10), (N * 6 // 10, N)):
        killed = kill_engine_core_at(run, rows, threshold, timeout=900)
        assert killed is not None, f"the engine core kill at {threshold} rows landed after the run"
        at, actor = killed
        assert at < next_threshold, f"the kill at {threshold} rows found {at} rows written"
        assert "GenerateActor" in " ".join(actor.cmdline()), "the core's parent is the actor"
        # The actor was not killed: it notices its engine died, and exits by itself.
        gone, alive = psutil.wait_procs([actor], timeout=120)
        assert gone and not alive, "the actor kept running with a dead engine"
    result = run.join(timeout=900)

    kept, dropped = run_uuids(run_dir)
    assert sorted(kept + dropped) == sorted(row_uuid("corekills", i) for i in range(N)), (
        f"every row exactly once after the same invocation: {len(kept)} kept + {len(dropped)}"
        f" dropped, {len(set(kept + dropped))} distinct, of {N}"
    )
    gen = result.generate
    assert result.incomplete is None and gen.rows_missing == 0
    assert (gen.rows_todo, gen.rows_processed) == (N, N)
    deaths = _actor_log_lines(local_ray, needle)
    assert len(deaths) - deaths_before == 2, f"one line per engine death in the logs: {deaths}"
    assert f"engine (vllm, {tiny_model_path}) died mid-run" in deaths[-1]
    assert "exiting this actor" in deaths[-1]

    # The same command again does nothing.
    again = pipeline.run(cfg)
    assert (again.generate.rows_todo, again.generate.rows_processed) == (0, 0)
    assert run_uuids(run_dir) == (kept, dropped)
