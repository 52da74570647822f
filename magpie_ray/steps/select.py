"""Select step: a filter recipe over every `deduped/` row at once (top-k is global).

Reads from all deduped parts only the columns the recipe needs (`uuid`, `index`, the condition
and balance columns, `response`, `response_length`, `response_finish_reason`) and runs
`select.select_rows`. Then, per deduped part: `selected/<same name>` holds its kept rows with
every column, `dropped/select/<same name>` its dropped rows as uuid, index, step, reason,
detail (storage.DROPPED_SCHEMA). Every row lands in exactly one of the two.

Resume: `selected/_manifest.json` names the deduped parts and the recipe the output was made
from and is written last; a rerun with both unchanged does nothing, anything else reselects
every row (and removes parts whose input is gone).
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError, FilterConfig
from ..select import select_rows
from ..storage import DROPPED_SCHEMA, RunStore

STEP = "select"
INPUT_STEP = "dedup"
ALWAYS_READ = ("uuid", "index", "response", "response_length", "response_finish_reason")


@dataclass(frozen=True)
class SelectStats:
    """Rows in, rows kept, rows dropped per reason; `skipped` when already done."""

    recipe: str
    rows: int
    kept: int
    drops: dict[str, int] = field(default_factory=dict)
    missing_columns: list[str] = field(default_factory=list)  # read as null: check the recipe
    seconds: float = 0.0
    skipped: bool = False


def _columns_present(store: RunStore, parts: list[str]) -> set[str]:
    names = [set(pq.read_schema(p, filesystem=store.fs).names) for p in parts]
    return set.intersection(*names)


def select_run(store: RunStore, recipe: FilterConfig) -> SelectStats:
    source, target = store.kept_dir(INPUT_STEP), store.kept_dir(STEP)
    parts = store.part_files(source)
    if not parts:
        raise ConfigError(f"no deduped parts in {source}: run the dedup step first")
    fingerprint = {"inputs": store.fingerprint(source), "recipe": asdict(recipe)}
    return store.once(target, fingerprint, SelectStats, lambda: _select(store, parts, recipe))


def _select(store: RunStore, parts: list[str], recipe: FilterConfig) -> SelectStats:
    started = time.perf_counter()
    target, dropped_dir = store.kept_dir(STEP), store.dropped_dir(STEP)
    wanted = {c.column for c in recipe.conditions} | {recipe.length_column, *ALWAYS_READ}
    if recipe.balance_column:
        wanted.add(recipe.balance_column)
    columns = sorted(wanted & _columns_present(store, parts))
    slices = [pq.read_table(p, columns=columns, filesystem=store.fs) for p in parts]
    selection = select_rows(pa.concat_tables(slices), recipe)

    offset = 0
    kept_written, dropped_written = set(), set()
    for path, predicate_columns in zip(parts, slices, strict=True):
        n, name = predicate_columns.num_rows, posixpath.basename(path)
        kept = selection.kept[offset : offset + n]
        if not kept.all():
            rows = np.flatnonzero(~kept)
            index = (
                predicate_columns.column("index").take(rows)
                if "index" in predicate_columns.column_names
                else pa.nulls(len(rows), pa.int64())
            )
            dropped = pa.table(
                {
                    "uuid": predicate_columns.column("uuid").take(rows),
                    "index": index,
                    "step": [STEP] * len(rows),
                    "reason": [selection.reasons[offset + i] for i in rows.tolist()],
                    "detail": [selection.details[offset + i] for i in rows.tolist()],
                }
            ).cast(DROPPED_SCHEMA)
            store.write_part(dropped_dir, name, dropped)
            dropped_written.add(name)
        if kept.any():
            part = pq.read_table(path, filesystem=store.fs).filter(pa.array(kept))
            store.write_part(target, name, part)
            kept_written.add(name)
        offset += n
    # Parts an earlier recipe or input wrote and this selection did not.
    store.remove_parts(target, kept_written)
    store.remove_parts(dropped_dir, dropped_written)
    return SelectStats(
        recipe=recipe.name,
        rows=len(selection.kept),
        kept=selection.num_kept,
        drops=selection.drop_counts(),
        missing_columns=selection.missing_columns,
        seconds=round(time.perf_counter() - started, 3),
    )


def run_step(cfg, store: RunStore) -> SelectStats:
    """The select step of `cfg` on `store`'s run (driver-side: it reads only a few columns)."""
    return select_run(store, cfg.filter)
