"""Select step: a filter recipe over every `deduped/` row (top-k is global), part by part.

Reads, one deduped part at a time, only the columns the recipe needs (`uuid`, `index`, the
condition and balance columns, `response_length`, `response_finish_reason`; `response` only
where a condition names it or a length is missing) and runs `select.select_parts`: the driver
holds one part's columns plus, with top_k or balance_by, each passing row's uuid, length and
label (its "keys"), never the rows. Then, per deduped part: `selected/<same name>` holds its
kept rows with every column, `dropped/select/<same name>` its dropped rows as uuid, index,
step, reason, detail (storage.DROPPED_SCHEMA). Every row lands in exactly one of the two; the
outcome is exactly `select.select_rows` on all rows at once.

Resume: `selected/_manifest.json` names the deduped parts and the recipe the output was made
from and is written last; a rerun with both unchanged does nothing, anything else reselects
every row (and removes parts whose input is gone).
"""

from __future__ import annotations

import posixpath
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError, FilterConfig
from ..selection import select_parts
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


def _predicate_reader(store: RunStore, parts: list[str], present: set[str], recipe: FilterConfig):
    """read(i): part i's columns the recipe looks at. `response` (the largest column) only
    where a condition names it or a row's `length_column` is null and top-k needs its length."""
    wanted = {c.column for c in recipe.conditions} | {recipe.length_column, *ALWAYS_READ}
    wanted |= {c.unless_column for c in recipe.conditions if c.unless_column}
    wanted |= {c for c in (recipe.balance_column, recipe.balance_by) if c}
    columns = sorted(wanted & present)
    named = {c.column for c in recipe.conditions} | {recipe.balance_column, recipe.balance_by}
    needs_response = "response" in named

    def read(i: int) -> pa.Table:
        small = [c for c in columns if c != "response"]
        table = pq.read_table(parts[i], columns=small, filesystem=store.fs)
        lengths = table.column(recipe.length_column) if recipe.length_column in small else None
        ranks = recipe.top_k is not None or bool(recipe.balance_by)  # by response length
        fallback = ranks and (lengths is None or lengths.null_count > 0)
        if "response" in columns and (needs_response or fallback):
            response = pq.read_table(parts[i], columns=["response"], filesystem=store.fs)
            table = table.append_column("response", response.column("response"))
        return table

    return read


def _select(store: RunStore, parts: list[str], recipe: FilterConfig) -> SelectStats:
    started = time.perf_counter()
    target, dropped_dir = store.kept_dir(STEP), store.dropped_dir(STEP)
    present = _columns_present(store, parts)
    read = _predicate_reader(store, parts, present, recipe)
    key_columns = [c for c in ("uuid", "index") if c in present]
    rows = kept_rows = 0
    drops: Counter[str] = Counter()
    missing: list[str] = []
    kept_written, dropped_written = set(), set()
    for i, selection in select_parts(read, len(parts), recipe):
        path = parts[i]
        name, kept = posixpath.basename(path), selection.kept
        rows, kept_rows = rows + len(kept), kept_rows + selection.num_kept
        drops.update(selection.drop_counts())
        missing = selection.missing_columns
        if not kept.all():
            keys = pq.read_table(path, columns=key_columns, filesystem=store.fs)
            store.write_part(dropped_dir, name, _dropped(keys, selection))
            dropped_written.add(name)
        if kept.any():
            part = pq.read_table(path, filesystem=store.fs).filter(pa.array(kept))
            store.write_part(target, name, part)
            kept_written.add(name)
    # Parts an earlier recipe or input wrote and this selection did not.
    store.remove_parts(target, kept_written)
    store.remove_parts(dropped_dir, dropped_written)
    return SelectStats(
        recipe=recipe.name,
        rows=rows,
        kept=kept_rows,
        drops=dict(drops),
        missing_columns=missing,
        seconds=round(time.perf_counter() - started, 3),
    )


def _dropped(keys: pa.Table, selection) -> pa.Table:
    """A part's dropped rows as storage.DROPPED_SCHEMA, in the part's row order."""
    rows = np.flatnonzero(~selection.kept)
    index = (
        keys.column("index").take(rows)
        if "index" in keys.column_names
        else pa.nulls(len(rows), pa.int64())
    )
    return pa.table(
        {
            "uuid": keys.column("uuid").take(rows),
            "index": index,
            "step": [STEP] * len(rows),
            "reason": [selection.reasons[i] for i in rows.tolist()],
            "detail": [selection.details[i] for i in rows.tolist()],
        }
    ).cast(DROPPED_SCHEMA)


def run_step(cfg, store: RunStore) -> SelectStats:
    """The select step of `cfg` on `store`'s run (driver-side: it reads only a few columns)."""
    return select_run(store, cfg.filter)
