"""The run summary counts kept + dropped rows against the number requested, and an incomplete
run says which step left rows undone and what to rerun."""

import pyarrow as pa

from magpie_ray.pipeline import incomplete_reason
from magpie_ray.report import format_summary, summarize
from magpie_ray.steps.generate.generation import StepStats
from magpie_ray.steps.generate.schema import GENERATED_SCHEMA
from magpie_ray.steps.tagging import TagStats
from magpie_ray.storage import DROPPED_SCHEMA, RunStore, part_name


def _write_run(store: RunStore, kept: list[int], dropped: list[int]) -> None:
    rows = [
        {"uuid": f"u{i}", "index": i, "instruction": "q", "response": "a", "model": "m"}
        for i in kept
    ]
    table = pa.Table.from_pylist(rows, schema=GENERATED_SCHEMA)
    store.write_part(store.kept_dir("generate"), part_name(0, [r["uuid"] for r in rows]), table)
    drops = [
        {"uuid": f"u{i}", "index": i, "step": "generate", "reason": "response_empty", "detail": ""}
        for i in dropped
    ]
    table = pa.Table.from_pylist(drops, schema=DROPPED_SCHEMA)
    store.write_part(store.dropped_dir("generate"), part_name(0, [r["uuid"] for r in drops]), table)


def test_summary_counts_done_rows_against_the_requested_number(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    _write_run(store, kept=[0, 1, 3, 9], dropped=[2])
    summary = summarize(store, requested=6)
    # index 9 belongs to an earlier, larger invocation: not one of the 6 requested rows
    assert (summary.rows_written, summary.requested, summary.requested_done) == (4, 6, 4)
    text = format_summary(summary)
    assert "rows done: 4 of 6 requested" in text
    assert "2 missing: rerun the same command" in text

    complete = summarize(store, requested=4)
    assert "rows done: 4 of 4 requested" in format_summary(complete)
    assert "missing" not in format_summary(complete)


def _gen_stats(**fields) -> StepStats:
    base = dict(
        rows_todo=10,
        rows_done_before=0,
        rows_processed=10,
        rows_kept=10,
        output_tokens=1,
        wall_seconds=1.0,
        generation_seconds=1.0,
        engine_load_seconds=0.0,
        passes=1,
    )
    return StepStats(**(base | fields))


def test_an_incomplete_step_names_the_missing_rows_and_the_rerun():
    assert incomplete_reason(_gen_stats(), None) is None
    reason = incomplete_reason(_gen_stats(rows_processed=7, rows_missing=3, passes=3), None)
    assert "generate: 3 of 10 rows" in reason and "after 3 passes" in reason
    assert "Rerun the same command" in reason and "generate.max_passes" in reason
    tag = TagStats(
        rows_todo=8, rows_done_before=0, rows_tagged=6, pools=(), wall_seconds=1.0, passes=3,
        rows_missing=2,
    )  # fmt: skip
    assert "tag: 2 of 8 rows are untagged after 3 passes" in incomplete_reason(None, tag)
