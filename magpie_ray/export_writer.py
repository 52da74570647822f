"""Exports: the selected rows as files that SFT / preference trainers load directly.

Reads the `selected/` parts one at a time (`Parts`) and writes, each atomically (renamed into
place once complete), under `<run>/exports/`, the files of the configured formats
(`export_formats.FORMATS`: a JSONL file of one record per row, or):

    data.parquet    every column of the selected rows (the released Magpie field names),
                    without `embedding` unless export.include_embedding, and without the
                    reasoning columns unless export.include_reasoning (messages.jsonl then
                    gives each assistant message its `reasoning_content`); with
                    export.turn_columns, the released multi-turn columns `instruction_2`,
                    `response_2`, ... next to `conversations` (null past a row's last turn);
                    with export.preference_rewards_column (e.g. `rewards_armorm`), `rewards` again
                    as the released DPO sets hold them: a list of {"score": float}

Rows are ordered by `index` then `uuid`, so the files do not depend on part order; the order
comes from those two columns alone, and rows become records `CHUNK_ROWS` at a time, so memory
does not grow with the run (data.parquet gets one row group per chunk). JSON keeps
non-ASCII text as is. Nothing is dropped except rows without a preference pair from dpo.jsonl
(counted per file in `ExportStats.left_out`). Pure apart from writing through a `RunStore`;
the step that runs it on a run is `steps/export.py`.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import ExportConfig
from .export_formats import FORMATS
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
    # JSONL file -> selected rows its format left out (dpo.jsonl: rows without a preference pair)
    left_out: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False
    card: str | None = None  # exports/README.md, the dataset card, when written
    card_seconds: float = 0.0


ORDER_KEYS = ("index", "uuid")
CHUNK_ROWS = 4096  # rows turned into records (Python dicts) at a time


@dataclass(frozen=True)
class Parts:
    """The selected rows as parts read one at a time: `read(i, columns)` gives part i's
    `columns` (those it has; None: all). `schema` is every part's schema unified, what
    concatenating the parts would give; each part is made to fit it as it is read."""

    count: int
    schema: pa.Schema
    read: Callable[[int, list[str] | None], pa.Table]

    @staticmethod
    def of_table(table: pa.Table) -> Parts:
        def read(i: int, columns: list[str] | None) -> pa.Table:
            return table if columns is None else table.select(columns)

        return Parts(1, table.schema, read)

    @staticmethod
    def of_files(store: RunStore, paths: list[str], empty_schema: pa.Schema) -> Parts:
        """Part files (`empty_schema`: the schema to write when there are none)."""
        schemas = [pq.read_schema(p, filesystem=store.fs) for p in paths]
        schema = pa.unify_schemas(schemas, promote_options="default") if paths else empty_schema

        def read(i: int, columns: list[str] | None) -> pa.Table:
            names = set(schemas[i].names)
            wanted = None if columns is None else [c for c in columns if c in names]
            return pq.read_table(paths[i], columns=wanted, filesystem=store.fs)

        return Parts(len(paths), schema, read)

    def fitted(self, i: int, columns: list[str] | None = None) -> pa.Table:
        """Part i's `columns` in the unified schema (a column the part lacks is null)."""
        fields = [self.schema.field(c) for c in columns] if columns else list(self.schema)
        table = self.read(i, columns)
        arrays = [
            table.column(f.name).cast(f.type)
            if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type)
            for f in fields
        ]
        schema = pa.schema(fields, metadata=self.schema.metadata)
        return pa.Table.from_arrays(arrays, schema=schema)


def _order(parts: Parts) -> tuple[np.ndarray, np.ndarray]:
    """(part, row) of every row in output order: `index` then `uuid` over all parts, as
    `Table.sort_by` orders the concatenated parts (stable; nulls last)."""
    keys = [k for k in ORDER_KEYS if k in parts.schema.names]
    tables, part_of, row_of = [], [], []
    for i in range(parts.count):
        table = parts.fitted(i, keys) if keys else None
        rows = table.num_rows if keys else parts.read(i, []).num_rows
        tables.append(table)
        part_of.append(np.full(rows, i, dtype=np.int64))
        row_of.append(np.arange(rows, dtype=np.int64))
    part_of = np.concatenate(part_of) if part_of else np.zeros(0, dtype=np.int64)
    row_of = np.concatenate(row_of) if row_of else np.zeros(0, dtype=np.int64)
    if keys and tables:
        every = pa.concat_tables(tables)
        order = pc.sort_indices(every, sort_keys=[(k, "ascending") for k in keys]).to_numpy()
        part_of, row_of = part_of[order], row_of[order]
    return part_of, row_of


def _chunks(parts: Parts, chunk_rows: int) -> Iterator[pa.Table]:
    """Every row, in output order, `chunk_rows` at a time. A part is read once, when its first
    row is due, and let go after its last: memory holds the parts whose rows interleave in
    output order (in a run, those written at the same time), not the run."""
    part_of, row_of = _order(parts)
    last_due = np.full(parts.count, -1, dtype=np.int64)
    np.maximum.at(last_due, part_of, np.arange(len(part_of)))
    loaded: dict[int, pa.Table] = {}
    for start in range(0, len(part_of), chunk_rows):
        stop = min(start + chunk_rows, len(part_of))
        chunk_parts, chunk_rows_of = part_of[start:stop], row_of[start:stop]
        grouped = np.argsort(chunk_parts, kind="stable")
        pieces = []
        for p in np.unique(chunk_parts).tolist():
            if p not in loaded:
                loaded[p] = parts.fitted(p)
            rows = chunk_rows_of[grouped][chunk_parts[grouped] == p]
            pieces.append(loaded[p].take(pa.array(rows)))
        yield pa.concat_tables(pieces).take(pa.array(np.argsort(grouped)))
        for p in [p for p in loaded if last_due[p] < stop]:
            del loaded[p]


def most_turns(parts: Parts) -> int:
    """The most user turns of any row (`conversations` without system turns; at least 1)."""
    most = 1
    if "conversations" not in parts.schema.names:
        return most
    for i in range(parts.count):
        conversations = parts.fitted(i, ["conversations"]).column("conversations")
        for conv in conversations.to_pylist():
            turns = sum(1 for t in conv or [] if t["from"] != "system")
            most = max(most, turns // 2)
    return most


def turn_columns(table: pa.Table, most: int) -> pa.Table:
    """`table` with `instruction_k` / `response_k` (2 <= k <= `most`, the run's most turns)
    from `conversations`, placed after it: the released multi-turn sets' columns (turn 1 is
    `instruction` / `response`)."""
    if "conversations" not in table.column_names:
        return table
    turns = [
        [t["value"] for t in conv or [] if t["from"] != "system"]
        for conv in table.column("conversations").to_pylist()
    ]
    at = table.column_names.index("conversations") + 1
    for k in range(2, most + 1):
        for offset, name in ((0, "instruction"), (1, "response")):
            i = 2 * (k - 1) + offset
            values = pa.array([t[i] if i < len(t) else None for t in turns], pa.string())
            table = table.add_column(at, f"{name}_{k}", values)
            at += 1
    return table


def _parquet_rows(table: pa.Table, cfg: ExportConfig, most: int) -> pa.Table:
    """The data.parquet columns of `table`'s rows."""
    left_out = [] if cfg.include_embedding else ["embedding"]
    left_out += [] if cfg.include_reasoning else list(REASONING_COLUMNS)
    table = table.drop_columns([c for c in left_out if c in table.column_names])
    if cfg.turn_columns:
        table = turn_columns(table, most)
    if cfg.preference_rewards_column and "rewards" in table.column_names:
        scores = [
            None if r is None else [{"score": v} for v in r]
            for r in table.column("rewards").to_pylist()
        ]
        shape = pa.list_(pa.struct([("score", pa.float64())]))
        at = table.column_names.index("rewards") + 1
        table = table.add_column(at, cfg.preference_rewards_column, pa.array(scores, shape))
    return table


def write_exports(
    store: RunStore, table: pa.Table | Parts, cfg: ExportConfig, chunk_rows: int = CHUNK_ROWS
) -> ExportStats:
    """Write the configured files for the selected rows (a table, or `Parts` read one at a
    time) under exports/, `chunk_rows` rows at a time, every file written as it goes and
    renamed into place at the end."""
    started = time.perf_counter()
    parts = table if isinstance(table, Parts) else Parts.of_table(table)
    out = posixpath.join(store.root, EXPORT_DIR)
    jsonl = [n for n in cfg.formats if FORMATS[n].record is not None]
    jsonl_columns = [c for c in JSONL_COLUMNS if c in parts.schema.names]
    tables = [FORMATS[n].file for n in cfg.formats if FORMATS[n].record is None]
    most = most_turns(parts) if tables and cfg.turn_columns else 1
    files = dict.fromkeys((FORMATS[n].file for n in cfg.formats), 0)
    rows = 0
    with contextlib.ExitStack() as stack:
        streams = {}
        for name in jsonl:
            tmp = stack.enter_context(store.atomic(posixpath.join(out, FORMATS[name].file)))
            streams[name] = stack.enter_context(store.fs.open_output_stream(tmp))
        empty = _parquet_rows(parts.schema.empty_table(), cfg, most)
        writers = []
        for file in tables:
            tmp = stack.enter_context(store.atomic(posixpath.join(out, file)))
            writer = pq.ParquetWriter(tmp, empty.schema, filesystem=store.fs)
            writers.append(stack.enter_context(writer))
        for chunk in _chunks(parts, chunk_rows):
            rows += chunk.num_rows
            if writers:
                table_rows = _parquet_rows(chunk, cfg, most)
                for writer in writers:
                    writer.write_table(table_rows)
            records = chunk.select(jsonl_columns).to_pylist() if jsonl else []
            for name in jsonl:
                fmt = FORMATS[name]
                lines = [fmt.record(r, cfg) for r in records]
                lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in lines if r is not None]
                streams[name].write("".join(lines).encode())
                files[fmt.file] += len(lines)
        for writer, file in zip(writers, tables, strict=True):
            if rows == 0:  # as pq.write_table writes an empty table: one empty row group
                writer.write_table(empty)
            files[file] = rows
    return ExportStats(
        rows=rows,
        files=files,
        left_out={FORMATS[n].file: rows - files[FORMATS[n].file] for n in jsonl},
        seconds=round(time.perf_counter() - started, 3),
    )
