"""Generation end to end on a local Ray: every row once, resume skips done rows, actors recover."""

import threading
import time

import psutil

from magpie_ray import pipeline
from magpie_ray.report import generate_line
from magpie_ray.steps.seeds import row_uuid
from tests.helpers import read_parts, run_uuids, tiny_config


def _expected(run_name: str, n: int) -> list[str]:
    return sorted(row_uuid(run_name, i) for i in range(n))


def test_generate_writes_every_row_once_and_reruns_do_nothing(local_ray, tiny_model_path, tmp_path):
    cfg = tiny_config(
        tiny_model_path, tmp_path, run_name="e2e", num_samples=12, batch_size=4, num_actors=2
    )
    result = pipeline.run(cfg, config_yaml="run_name: e2e\n")
    kept, dropped = run_uuids(tmp_path / "e2e")
    assert sorted(kept + dropped) == _expected("e2e", 12)
    assert len(kept) >= 9, read_parts(tmp_path / "e2e" / "dropped" / "generate")
    assert result.generate.rows_processed == 12 and result.generate.output_tokens > 0
    gen = result.generate
    assert 1 <= gen.actors <= 2 and gen.engine_steps > 0 and gen.rows_skipped_on_retry == 0
    assert 0 < gen.engine_busy_fraction <= 1
    line = generate_line(gen)
    assert "engines busy" in line and "tokens per engine step (max_num_seqs 256)" in line
    assert result.summary.rows_written == len(kept)
    assert len(list((tmp_path / "e2e" / "generated").glob("part-*.parquet"))) == 3
    assert (tmp_path / "e2e" / "config.yaml").read_text() == "run_name: e2e\n"
    rows = read_parts(tmp_path / "e2e" / "generated")
    assert all(r["model"] == "tiny-chat" and r["instruction"] and r["response"] for r in rows)

    again = pipeline.run(cfg)
    assert again.generate.rows_todo == 0 and again.generate.rows_processed == 0
    assert run_uuids(tmp_path / "e2e") == (kept, dropped)

    # Asking for more samples generates only the new indices.
    cfg.generate.num_samples = 16
    more = pipeline.run(cfg)
    assert more.generate.rows_todo == 4 and more.generate.rows_done_before == 12
    kept2, dropped2 = run_uuids(tmp_path / "e2e")
    assert sorted(kept2 + dropped2) == _expected("e2e", 16)


def _engine_actor_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "GenerateActor" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_killed_engine_actor_is_replaced_and_no_row_is_lost(local_ray, tiny_model_path, tmp_path):
    cfg = tiny_config(tiny_model_path, tmp_path, run_name="kill", num_samples=24, batch_size=2)
    cfg.engine.kind = "hf"  # slower per batch: the kill lands mid-run
    parts = tmp_path / "kill" / "generated"
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = pipeline.run(cfg)
        except BaseException as err:  # surfaced by the assertion below
            outcome["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 300
    while not list(parts.glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)
    victims = _engine_actor_processes()
    assert len(victims) == 1, f"expected one engine actor, found {victims}"
    written_before_kill = len(list(parts.glob("part-*.parquet")))
    victims[0].kill()
    worker.join(timeout=600)
    assert not worker.is_alive(), "the pipeline did not finish after the actor was killed"
    assert "error" not in outcome, outcome.get("error")
    assert written_before_kill < 12, "the kill came after the run had finished"
    kept, dropped = run_uuids(tmp_path / "kill")
    # The pool had one actor, so the rows after the kill came from its replacement.
    assert sorted(kept + dropped) == _expected("kill", 24), "every row exactly once"
