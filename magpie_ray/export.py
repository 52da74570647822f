"""Exports: the selected rows as files that SFT / preference trainers load directly.

Reads every `selected/` part. Writes, each atomically, under `<run>/exports/`:

    sharegpt.jsonl  {"uuid", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}
                    Axolotl `type: sharegpt` / chat_template, LLaMA-Factory `formatting: sharegpt`
    messages.jsonl  {"uuid", "messages": [{"role": "user"|"assistant"|"system", "content"}]}
                    TRL SFTTrainer (conversational), OpenAI fine-tuning, Axolotl chat_template
    dpo.jsonl       {"uuid", "prompt": [messages], "chosen": [assistant], "rejected": [assistant]}
                    TRL DPOTrainer's conversational format with an explicit prompt; only rows
                    whose `chosen` and `rejected` are both set (a valid pair)
    data.parquet    every column of the selected rows (the released Magpie field names),
                    without `embedding` unless export.include_embedding, and without the
                    reasoning columns unless export.include_reasoning (messages.jsonl then
                    gives each assistant message its `reasoning_content`); with
                    export.turn_columns, the released multi-turn columns `instruction_2`,
                    `response_2`, ... next to `conversations` (null past a row's last turn);
                    with export.preference_rewards_column (e.g. `rewards_armorm`), `rewards` again
                    as the released DPO sets hold them: a list of {"score": float}

Rows are ordered by `index` then `uuid`, so the files do not depend on part order. JSON keeps
non-ASCII text as is. Nothing is dropped except rows without a preference pair from dpo.jsonl
(counted as `rows_without_pair`). Pure apart from writing through a `RunStore`; the step that
runs it on a run is `steps/export.py`. A new format is one entry in `FORMATS`.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from .config import ExportConfig
from .conversations import row_turns, to_messages
from .storage import RunStore

EXPORT_DIR = "exports"
JSONL_COLUMNS = (
    "uuid",
    "instruction",
    "response",
    "conversations",
    "chosen",
    "rejected",
    "response_reasoning",
    "turn_response_reasonings",
)
# A reasoning model's reasoning: in the exports only with export.include_reasoning.
REASONING_COLUMNS = ("response_reasoning", "turn_response_reasonings", "responses_reasoning")


@dataclass(frozen=True)
class ExportStats:
    rows: int
    files: dict[str, int] = field(default_factory=dict)  # file name -> records written
    rows_without_pair: int = 0  # selected rows left out of dpo.jsonl
    seconds: float = 0.0
    skipped: bool = False


def sharegpt_record(row: dict, cfg: ExportConfig) -> dict:
    return {"uuid": row["uuid"], "conversations": row_turns(row)}


def messages_record(row: dict, cfg: ExportConfig) -> dict:
    """Role/content messages; with `include_reasoning`, each assistant message of a reasoning
    model carries its reasoning as `reasoning_content` (the field chat APIs use)."""
    messages = to_messages(row_turns(row))
    if cfg.include_reasoning:
        reasonings = row.get("turn_response_reasonings") or [row.get("response_reasoning")]
        answers = [m for m in messages if m["role"] == "assistant"]
        for message, reasoning in zip(answers, reasonings, strict=False):
            if reasoning is not None:
                message["reasoning_content"] = reasoning
    return {"uuid": row["uuid"], "messages": messages}


def dpo_record(row: dict, cfg: ExportConfig) -> dict | None:
    """Prompt = the conversation before the final assistant turn; None without a valid pair."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not chosen or not rejected:
        return None
    chosen = [{"role": m["role"], "content": m["content"]} for m in chosen]
    rejected = [{"role": m["role"], "content": m["content"]} for m in rejected]
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    prompt = chosen[:-1] or [{"role": "user", "content": row["instruction"]}]
    return {
        "uuid": row["uuid"],
        "prompt": prompt,
        "chosen": chosen[-1:],
        "rejected": rejected[-1:],
    }


@dataclass(frozen=True)
class Format:
    """An export file: JSON lines of one record per row (None: the row is left out), or, with
    `record` None, the selected table itself as Parquet."""

    file: str
    record: Callable[[dict, ExportConfig], dict | None] | None = None


FORMATS = {
    "sharegpt": Format("sharegpt.jsonl", sharegpt_record),
    "messages": Format("messages.jsonl", messages_record),
    "dpo": Format("dpo.jsonl", dpo_record),
    "parquet": Format("data.parquet"),
}
FILES = {name: fmt.file for name, fmt in FORMATS.items()}


def ordered(table: pa.Table) -> pa.Table:
    keys = [(k, "ascending") for k in ("index", "uuid") if k in table.column_names]
    return table.sort_by(keys) if keys else table


def _write_jsonl(store: RunStore, path: str, records: list[dict]) -> None:
    def write(tmp: str) -> None:
        with store.fs.open_output_stream(tmp) as f:
            for record in records:
                f.write((json.dumps(record, ensure_ascii=False) + "\n").encode())

    store.write_atomic(path, write)


def turn_columns(table: pa.Table) -> pa.Table:
    """`table` with `instruction_k` / `response_k` (k >= 2) from `conversations`, placed after
    it: the released multi-turn sets' columns (turn 1 is `instruction` / `response`)."""
    if "conversations" not in table.column_names:
        return table
    turns = [
        [t["value"] for t in conv or [] if t["from"] != "system"]
        for conv in table.column("conversations").to_pylist()
    ]
    most = max((len(t) // 2 for t in turns), default=1)
    at = table.column_names.index("conversations") + 1
    for k in range(2, most + 1):
        for offset, name in ((0, "instruction"), (1, "response")):
            i = 2 * (k - 1) + offset
            values = pa.array([t[i] if i < len(t) else None for t in turns], pa.string())
            table = table.add_column(at, f"{name}_{k}", values)
            at += 1
    return table


def _write_parquet(store: RunStore, path: str, table: pa.Table, cfg: ExportConfig) -> int:
    left_out = [] if cfg.include_embedding else ["embedding"]
    left_out += [] if cfg.include_reasoning else list(REASONING_COLUMNS)
    table = table.drop_columns([c for c in left_out if c in table.column_names])
    if cfg.turn_columns:
        table = turn_columns(table)
    if cfg.preference_rewards_column and "rewards" in table.column_names:
        scores = [
            None if r is None else [{"score": v} for v in r]
            for r in table.column("rewards").to_pylist()
        ]
        shape = pa.list_(pa.struct([("score", pa.float64())]))
        at = table.column_names.index("rewards") + 1
        table = table.add_column(at, cfg.preference_rewards_column, pa.array(scores, shape))
    store.write_atomic(path, lambda tmp: pq.write_table(table, tmp, filesystem=store.fs))
    return table.num_rows


def write_exports(store: RunStore, table: pa.Table, cfg: ExportConfig) -> ExportStats:
    """Write the configured files for `table` (the selected rows) under exports/."""
    started = time.perf_counter()
    table = ordered(table)
    out = posixpath.join(store.root, EXPORT_DIR)
    files: dict[str, int] = {}
    jsonl_columns = [c for c in JSONL_COLUMNS if c in table.column_names]
    needs_rows = any(FORMATS[f].record is not None for f in cfg.formats)
    rows = table.select(jsonl_columns).to_pylist() if needs_rows else []
    without_pair = 0
    for name in cfg.formats:
        fmt = FORMATS[name]
        path = posixpath.join(out, fmt.file)
        if fmt.record is None:
            files[fmt.file] = _write_parquet(store, path, table, cfg)
            continue
        records = [r for r in (fmt.record(row, cfg) for row in rows) if r is not None]
        if name == "dpo":
            without_pair = len(rows) - len(records)
        _write_jsonl(store, path, records)
        files[fmt.file] = len(records)
    return ExportStats(
        rows=table.num_rows,
        files=files,
        rows_without_pair=without_pair,
        seconds=round(time.perf_counter() - started, 3),
    )
