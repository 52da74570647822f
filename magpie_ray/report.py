"""Run summary: what a run holds on disk (all invocations), read back from its part files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .storage import RunStore


@dataclass(frozen=True)
class RunSummary:
    output_path: str
    rows_written: int
    drops: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    response_finish_reasons: dict[str, int] = field(default_factory=dict)


def summarize(store: RunStore, num_examples: int = 3) -> RunSummary:
    kept = store.read_parts(
        store.kept_dir("generate"),
        columns=["uuid", "instruction", "response", "response_finish_reason"],
    )
    dropped = store.read_parts(store.dropped_dir("generate"), columns=["reason"])
    examples = []
    finish: dict[str, int] = {}
    if kept is not None:
        examples = kept.slice(0, num_examples).select(["uuid", "instruction", "response"])
        examples = examples.to_pylist()
        finish = dict(Counter(kept.column("response_finish_reason").to_pylist()))
    drops = dict(Counter(dropped.column("reason").to_pylist())) if dropped is not None else {}
    return RunSummary(
        output_path=store.kept_dir("generate"),
        rows_written=0 if kept is None else kept.num_rows,
        drops=drops,
        examples=examples,
        response_finish_reasons=finish,
    )


def format_summary(summary: RunSummary, stats=None, width: int = 300) -> str:
    lines = [f"rows written: {summary.rows_written}"]
    drops = ", ".join(f"{k}={v}" for k, v in sorted(summary.drops.items())) or "none"
    lines.append(f"rows dropped: {sum(summary.drops.values())} ({drops})")
    if summary.response_finish_reasons:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(summary.response_finish_reasons.items()))
        lines.append(f"response finish reasons: {reasons}")
    if stats is not None:
        rate = stats.output_tokens / max(stats.generation_seconds, 1e-9)
        lines.append(
            f"this invocation: {stats.rows_processed} rows generated "
            f"({stats.rows_done_before} already done), {stats.output_tokens} output tokens in "
            f"{stats.generation_seconds:.1f} s of generation = {rate:.1f} output tok/s; "
            f"step wall time {stats.wall_seconds:.1f} s incl. engine start "
            f"{stats.engine_load_seconds:.1f} s"
        )
    lines.append(f"output: {summary.output_path}")
    for i, ex in enumerate(summary.examples, 1):
        lines.append(f"--- example {i} ({ex['uuid']})")
        lines.append(f"instruction: {_clip(ex['instruction'], width)}")
        lines.append(f"response:    {_clip(ex['response'], width)}")
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_global_steps(dedup=None, select=None, export=None) -> str:
    """One line per global step that ran (DedupStats, SelectStats, ExportStats)."""
    lines = []
    if dedup is not None:
        done = " (already done)" if dedup.skipped else ""
        lines.append(
            f"dedup{done}: {dedup.rows} rows, {dedup.duplicates} duplicates in "
            f"{dedup.duplicate_clusters} clusters, {dedup.rows_without_embedding} without "
            f"embedding; search: {dedup.search}"
        )
    if select is not None:
        done = " (already done)" if select.skipped else ""
        drops = ", ".join(f"{k}={v}" for k, v in sorted(select.drops.items())) or "none"
        lines.append(f"select {select.recipe}{done}: kept {select.kept} of {select.rows}; {drops}")
        if select.missing_columns:
            lines.append(f"  columns not in the data (read as null): {select.missing_columns}")
    if export is not None:
        done = " (already done)" if export.skipped else ""
        files = ", ".join(f"{k}={v}" for k, v in export.files.items())
        lines.append(f"exports{done}: {files}")
    return "\n".join(lines)
