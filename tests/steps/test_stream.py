"""Generation streaming into tagging (`tag.stream=true`) on local Ray with every tag pool (two
vLLM taggers among them) and what users run for generation (the vLLM engine, the default
batches in flight): the engine actor killed early and at half the rows, a tagger actor killed
mid-call, and the same invocation still ends with every row generated once and tagged once.
(A lost node and a resubmission: tests/e2e/test_two_nodes.py.)"""

from __future__ import annotations

import pytest

from magpie_ray import pipeline
from magpie_ray.config import ClusterConfig
from magpie_ray.steps.generate.seeds import row_uuid
from tests.actor_kills import BackgroundRun, kill_at, rows_on_disk
from tests.helpers import read_parts, run_uuids, tag_config

# Three kills and every tag pool: about two and a half minutes here. `make test` streams on two
# nodes with a lost node (tests/e2e/test_two_nodes.py) and kills engine and tagger actors
# without streaming (tests/e2e/test_actor_deaths.py, tests/steps/test_tag.py).
pytestmark = pytest.mark.chaos

N = 48


def test_streamed_tagging_survives_engine_and_tagger_kills_with_every_row_once(
    local_ray, tmp_path, tiny_model_path, tiny_reward_path
):
    cfg = tag_config(tmp_path, tiny_model_path, tiny_reward_path)
    cfg.steps = ["generate", "tag"]
    cfg.tag.stream = True
    cfg.generate.num_samples = N
    cfg.run_name = "streamed"
    assert cfg.engine.kind == "vllm"
    assert cfg.cluster.batches_in_flight == ClusterConfig().batches_in_flight > 1
    run_dir = tmp_path / "streamed"

    def generated() -> int:
        return rows_on_disk(run_dir / "generated", run_dir / "dropped" / "generate")

    run = BackgroundRun(pipeline.run, cfg)
    # The engine actor early and at half the rows (rows in flight go with it; its retried calls
    # skip rows already written), then a tagger mid-call (tagging runs behind generation).
    for threshold in (N // 8, N // 2):
        at = kill_at(run, "GenerateActor", generated, threshold)
        assert at is not None and at < N, f"the engine kill at {threshold} rows landed too late"
    assert kill_at(run, "JudgeTagger", generated, 0, phase="working") is not None
    result = run.join(timeout=900)

    kept, dropped = run_uuids(run_dir)
    assert sorted(kept + dropped) == sorted(row_uuid("streamed", i) for i in range(N))
    tagged = read_parts(run_dir / "tagged")
    assert len({r["uuid"] for r in tagged}) == len(tagged), "a row was tagged twice"
    assert sorted(r["uuid"] for r in tagged) == sorted(kept), "every generated row, tagged once"
    assert result.incomplete is None
    stats = result.tag
    assert (stats.rows_todo, stats.rows_tagged, stats.rows_missing) == (len(kept), len(kept), 0)
    assert 0 < stats.rows_streamed <= len(kept)
    assert stats.pools == ("reward", "guard", "judge", "embedder")
    for row in tagged:
        assert row["reward_model"] == "stand-in:tiny-rm"
        assert row["safety"] in ("safe", "unsafe")
        assert len(row["embedding"]) == 384
        assert row["task_category_generator"] == "tiny-chat"
        # generated columns travel through the stream untouched
        assert row["conversations"][0]["value"] == row["instruction"]

    # The same command again: nothing to generate, nothing to tag, no pool starts.
    again = pipeline.run(cfg)
    assert (again.generate.rows_todo, again.tag.rows_todo, again.tag.rows_streamed) == (0, 0, 0)
