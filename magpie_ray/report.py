"""Run summary: what a run holds on disk (all invocations), read back from its part files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .costs import cost_rows, read_costs
from .diversity import diversity_rows, read_diversity
from .funnel import Funnel, funnel_lines, read_funnel
from .storage import RunStore
from .taggers.registry import LABEL_COLUMNS, MODEL_COLUMNS


@dataclass(frozen=True)
class RunSummary:
    output_path: str
    rows_written: int
    drops: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    response_finish_reasons: dict[str, int] = field(default_factory=dict)
    tagged: TagSummary | None = None
    requested: int | None = None  # generate.num_samples
    requested_done: int = 0  # rows of index < requested that are kept or dropped
    # reasoning models: rows with a reasoning, and those whose reasoning never ended
    reasoning_rows: int = 0
    unclosed_reasoning: int = 0
    funnel: Funnel | None = None  # the same figures as the report's and the dataset card's
    costs: list[tuple[str, str]] = field(default_factory=list)  # costs.cost_rows
    diversity: list[tuple[str, str, str]] = field(default_factory=list)  # (figure, all, kept)


@dataclass(frozen=True)
class TagSummary:
    """What `tagged/` holds: label counts per tag, why tags are null, the models used."""

    rows: int
    output_path: str
    labels: dict[str, dict[str, int]]  # tag column -> label -> rows (None counted as "null")
    null_reasons: dict[str, int]  # "tag: reason" -> rows
    mean_reward: float | None
    models: dict[str, str]  # tag -> model name recorded in the rows
    # rows with preference samples: "pair" when chosen/rejected exist, else why not
    preference_pairs: dict[str, int] = field(default_factory=dict)


def label_counts(table, column: str) -> dict[str, int]:
    """Rows per value of a tag column, a null counted as "null"."""
    return dict(Counter("null" if v is None else v for v in table.column(column).to_pylist()))


def null_tag_reasons(table) -> dict[str, int]:
    """Rows per "tag: reason" in `tag_errors` (why a tag is null)."""
    reasons: Counter = Counter()
    for errors in table.column("tag_errors").to_pylist():
        for error in errors or []:
            reasons[f"{error['tag']}: {_clip(error['reason'], 80)}"] += 1
    return dict(reasons)


def preference_pair_counts(table) -> dict[str, int]:
    """Rows with preference samples: "pair" when chosen/rejected exist, else why not."""
    pairs = zip(
        table.column("rewards").to_pylist(),
        table.column("preference_pair_reason").to_pylist(),
        strict=True,
    )
    return dict(Counter(reason or "pair" for rewards, reason in pairs if rewards is not None))


def summarize_tags(store: RunStore) -> TagSummary | None:
    columns = [
        *LABEL_COLUMNS,
        *MODEL_COLUMNS.values(),
        "instruct_reward",
        "tag_errors",
        "rewards",
        "preference_pair_reason",
    ]
    table = store.read_parts(store.kept_dir("tag"), columns=columns)
    if table is None:
        return None
    rewards = [r for r in table.column("instruct_reward").to_pylist() if r is not None]
    models = {}
    for tag, column in MODEL_COLUMNS.items():
        names = {v for v in table.column(column).to_pylist() if v is not None}
        if names:
            models[tag] = ", ".join(sorted(names))
    return TagSummary(
        rows=table.num_rows,
        output_path=store.kept_dir("tag"),
        labels={c: label_counts(table, c) for c in LABEL_COLUMNS},
        null_reasons=null_tag_reasons(table),
        mean_reward=sum(rewards) / len(rewards) if rewards else None,
        models=models,
        preference_pairs=preference_pair_counts(table),
    )


def summarize(
    store: RunStore,
    num_examples: int = 3,
    requested: int | None = None,
    gpu_hour_usd: float | None = None,
) -> RunSummary:
    kept = store.read_parts(store.kept_dir("generate"), columns=["index", "response_finish_reason"])
    dropped = store.read_parts(store.dropped_dir("generate"), columns=["index", "reason"])
    requested_done = 0
    if requested is not None:
        for table in (kept, dropped):
            if table is not None:
                indices = table.column("index").to_pylist()
                requested_done += sum(1 for i in indices if i is not None and i < requested)
    examples = []
    finish: dict[str, int] = {}
    if kept is not None:
        examples = _first_rows(store, store.kept_dir("generate"), num_examples)
        finish = dict(Counter(kept.column("response_finish_reason").to_pylist()))
    drops = dict(Counter(dropped.column("reason").to_pylist())) if dropped is not None else {}
    reasoning_rows, unclosed = _reasoning_counts(store)
    funnel = read_funnel(store, requested)
    costs = read_costs(store)
    return RunSummary(
        output_path=store.kept_dir("generate"),
        rows_written=0 if kept is None else kept.num_rows,
        drops=drops,
        examples=examples,
        response_finish_reasons=finish,
        tagged=summarize_tags(store),
        requested=requested,
        requested_done=requested_done,
        reasoning_rows=reasoning_rows,
        unclosed_reasoning=unclosed,
        funnel=funnel,
        costs=cost_rows(costs, gpu_hour_usd, funnel.kept) if costs.steps else [],
        diversity=diversity_rows(figures) if (figures := read_diversity(store)) else [],
    )


def _first_rows(store: RunStore, directory: str, rows: int) -> list[dict]:
    """uuid, instruction and response of the first `rows` rows in part order (the run's
    texts stay on disk)."""
    import pyarrow.parquet as pq

    examples: list[dict] = []
    for path in store.part_files(directory):
        if len(examples) >= rows:
            break
        part = pq.read_table(path, columns=["uuid", "instruction", "response"], filesystem=store.fs)
        examples += part.slice(0, rows - len(examples)).to_pylist()
    return examples


def _reasoning_counts(store: RunStore) -> tuple[int, int]:
    """(rows with a reasoning, rows whose reasoning never ended: no answer) in generated/."""
    import pyarrow.parquet as pq

    directory = store.kept_dir("generate")
    files = store.part_files(directory)
    if not files or "response_reasoning" not in pq.read_schema(files[0], filesystem=store.fs).names:
        return 0, 0
    reasoned = unclosed = 0
    for path in files:  # a part at a time: the texts of a run do not fit in the driver
        part = pq.read_table(path, columns=["response_reasoning", "response"], filesystem=store.fs)
        pairs = zip(
            part.column("response_reasoning").to_pylist(),
            part.column("response").to_pylist(),
            strict=True,
        )
        answers = [answer for reasoning, answer in pairs if reasoning is not None]
        reasoned, unclosed = reasoned + len(answers), unclosed + sum(1 for a in answers if not a)
    return reasoned, unclosed


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def generate_line(stats) -> str:
    rate = stats.output_tokens / max(stats.generation_seconds, 1e-9)
    return (
        f"{stats.rows_processed} rows generated ({stats.rows_done_before} already done), "
        f"{stats.output_tokens} output tokens in {stats.generation_seconds:.1f} s of generation "
        f"= {rate:.1f} output tok/s; step wall time {stats.wall_seconds:.1f} s incl. engine "
        f"start {stats.engine_load_seconds:.1f} s" + _engine_notes(stats)
    )


def _engine_notes(stats) -> str:
    notes = ""
    fraction = stats.engine_busy_fraction
    if fraction is not None:
        notes += f"; engines busy {100 * fraction:.0f}% of generation time"
        notes += f" ({stats.actors} actor(s))"
    if stats.max_num_seqs and stats.engine_steps:
        # Decode steps emit one token per running sequence: tokens per step ~ the mean batch.
        notes += (
            f"; {stats.output_tokens / stats.engine_steps:.0f} output tokens per engine step"
            f" (max_num_seqs {stats.max_num_seqs})"
        )
    if stats.rows_skipped_on_retry:
        notes += f"; {stats.rows_skipped_on_retry} rows of retried batches were already written"
    return notes + _passes_note(stats)


def _passes_note(stats) -> str:
    """Passes after the first went through rows a dead actor or node took with it."""
    note = ""
    if stats.passes > 1:
        note += f"; {stats.passes} passes (rows lost with a dead actor or node went through again)"
    if stats.rows_missing:
        note += f"; {stats.rows_missing} rows still missing"
    return note


def tag_line(stats) -> str:
    streamed = f"{stats.rows_streamed} as they were generated, " if stats.rows_streamed else ""
    return (
        f"{stats.rows_tagged} rows tagged ({streamed}{stats.rows_done_before} already done)"
        f" by pools {', '.join(stats.pools) or 'none'} in {stats.wall_seconds:.1f} s"
        + _passes_note(stats)
    )


def invocation_lines(generate_stats=None, tag_stats=None) -> list[str]:
    """What this invocation did, step by step (a resumed run counts only its own work)."""
    lines = []
    if generate_stats is not None:
        lines.append("generate: " + generate_line(generate_stats))
    if tag_stats is not None:
        lines.append("tag: " + tag_line(tag_stats))
    return lines


def format_tag_summary(tags: TagSummary, stats=None) -> list[str]:
    lines = [f"rows tagged: {tags.rows} ({tags.output_path})"]
    if stats is not None:
        lines.append(f"this invocation: {tag_line(stats)}")
    for tag, model in tags.models.items():
        lines.append(f"  {tag} model: {model}")
    for column, counts in tags.labels.items():
        lines.append(f"  {column}: {_counts(counts)}")
    if tags.mean_reward is not None:
        lines.append(f"  mean instruct_reward: {tags.mean_reward:.3f}")
    if tags.preference_pairs:
        lines.append(f"  preference rows: {_counts(tags.preference_pairs)}")
    if tags.null_reasons:
        lines.append(f"  null tags by reason: {_counts(tags.null_reasons)}")
    return lines


def format_summary(summary: RunSummary, stats=None, width: int = 300, tag_stats=None) -> str:
    lines = [f"rows written: {summary.rows_written}"]
    drops = ", ".join(f"{k}={v}" for k, v in sorted(summary.drops.items())) or "none"
    lines.append(f"rows dropped: {sum(summary.drops.values())} ({drops})")
    if summary.requested is not None:
        lines.append(requested_line(summary))
    if summary.response_finish_reasons:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(summary.response_finish_reasons.items()))
        lines.append(f"response finish reasons: {reasons}")
    if summary.reasoning_rows:
        lines.append(
            f"responses with reasoning: {summary.reasoning_rows} (in response_reasoning; reasoning"
            f" that never ended, so no answer: {summary.unclosed_reasoning})"
        )
    if stats is not None:
        lines.append(f"this invocation: {generate_line(stats)}")
    lines.append(f"output: {summary.output_path}")
    if summary.tagged is not None:
        lines.extend(format_tag_summary(summary.tagged, tag_stats))
    if summary.funnel is not None:
        lines.append("row funnel:")
        lines.extend(funnel_lines(summary.funnel))
    if summary.diversity:
        lines.append("diversity (generated | kept):")
        lines.extend(f"  {name}: {a or '-'} | {b or '-'}" for name, a, b in summary.diversity)
    if summary.costs:
        lines.append("cost and efficiency:")
        lines.extend(f"  {figure}: {value}" for figure, value in summary.costs)
    for i, ex in enumerate(summary.examples, 1):
        lines.append(f"--- example {i} ({ex['uuid']})")
        lines.append(f"instruction: {_clip(ex['instruction'], width)}")
        lines.append(f"response:    {_clip(ex['response'], width)}")
    return "\n".join(lines)


def requested_line(summary: RunSummary) -> str:
    """Kept + dropped rows against the number requested, and what to do about any missing."""
    line = (
        f"rows done: {summary.requested_done} of {summary.requested} requested (kept or dropped,"
        " each exactly once)"
    )
    missing = summary.requested - summary.requested_done
    if missing > 0:
        line += (
            f"; {missing} missing: rerun the same command (with the generate step) to generate them"
        )
    return line


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
