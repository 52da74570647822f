"""Selection: a filter recipe (conditions, then the top-k longest responses) over tagged rows.

Pure (pyarrow + numpy; no Ray, no files). `select_rows(table, recipe)` reads the columns the
recipe names (plus `uuid`, `response`, `response_length`, `response_finish_reason`) and returns
a `Selection`: which rows are kept and, for every other row, exactly one drop reason and a
detail (the value that failed), in table order. Stages, in order:

1. conditions, in the order the recipe lists them; a row is dropped by the first it fails.
   A condition is kept-when-true: "input_quality >= good" keeps rows rated good or excellent.
   Quality and difficulty labels compare by rank (`ORDINAL_LABELS`), numbers numerically.
   A null value (a failed tag, NaN, or a column the data lacks) never passes and is counted
   under its own reason "<column> is null"; an unknown label under "<column> unknown label".
   A condition with `unless_column` / `unless_in` lets the rows whose value is listed through.
2. `exclude_truncated`: rows whose response hit max_tokens (finish reason "length") are
   dropped as "response truncated", before length ranking can favour them.
3. top-k: the `top_k` longest responses (characters: `length_column`, else len(response)),
   ties broken by uuid, so the result does not depend on row order. With `balance_column`
   each group of labels gets an equal share of top_k (Pro-6: easy vs harder); rows outside
   every group are dropped as "<column> not in balance groups".
   Before the top-k, `balance_by` with `max_share` caps every label of that column (a null
   label too): the largest cap c with c <= max_share x min(top_k, rows left after capping),
   so no label holds more than max_share of the kept rows; a label over the cap keeps its c
   longest responses (ties by uuid), the rest are dropped as "<column> over max_share".

`select_rows` runs the stages on one table. `select_parts` gives the same outcome over a run's
parts one at a time: stages 1-2 and the balance groups look at one row each (`row_stages`),
only the top-k needs every row, and it needs just their keys (`TopKKeys`: uuid, length, group).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import Condition, ConfigError, FilterConfig
from .labels import ORDINAL_LABELS

COMPARISONS = {
    ">": pc.greater,
    ">=": pc.greater_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    "==": pc.equal,
    "!=": pc.not_equal,
}
SET_OPS = ("in", "not_in")
STRING_OPS = ("not_endswith", "contains", "not_contains")
COUNT_OPS = ("newlines_lt",)
OPS = (*COMPARISONS, *SET_OPS, *STRING_OPS, *COUNT_OPS)
TRUNCATED = "response truncated"
BELOW_TOP_K = "not in top-k longest"
OVER_SHARE = "{column} over max_share"


def describe(cond: Condition) -> str:
    """The condition as its drop reason: what a kept row satisfies."""
    value = cond.value
    if isinstance(value, list | tuple):
        value = "[" + ", ".join(str(v) for v in value) + "]"
    op = "newlines <" if cond.op == "newlines_lt" else cond.op.replace("_", " ")
    text = f"{cond.column} {op} {value}"
    if cond.unless_column:
        text += f" unless {cond.unless_column} in [{', '.join(map(str, cond.unless_in or []))}]"
    return text


def filter_problems(recipe: FilterConfig) -> list[str]:
    """Config errors in a recipe, each naming the fix (empty when it is valid)."""
    problems = []
    for i, cond in enumerate(recipe.conditions):
        where = f"filter.conditions[{i}] ({cond.column} {cond.op} {cond.value})"
        if cond.op not in OPS:
            problems.append(f"{where}: unknown op; valid: {list(OPS)}")
            continue
        labels = ORDINAL_LABELS.get(cond.column)
        values = cond.value if cond.op in SET_OPS else [cond.value]
        if cond.op in SET_OPS and not isinstance(cond.value, list | tuple):
            problems.append(f"{where}: '{cond.op}' needs a list value")
        elif cond.op in STRING_OPS and not isinstance(cond.value, str):
            problems.append(f"{where}: '{cond.op}' needs a string value")
        elif cond.op in COUNT_OPS and (
            isinstance(cond.value, bool) or not isinstance(cond.value, int)
        ):
            problems.append(f"{where}: '{cond.op}' needs a whole number")
        elif bool(cond.unless_column) != (cond.unless_in is not None):
            problems.append(f"{where}: unless_column and unless_in go together")
        elif labels and any(v not in labels for v in values):
            problems.append(f"{where}: {cond.column} labels are {list(labels)}")
        elif cond.value is None:
            problems.append(f"{where}: needs a value (nulls never pass anyway)")
    if recipe.top_k is not None and recipe.top_k < 1:
        problems.append(f"filter.top_k={recipe.top_k}: must be >= 1, or null for no limit")
    if recipe.balance_by is not None or recipe.max_share is not None:
        if not recipe.balance_by or recipe.max_share is None:
            problems.append("filter.balance_by and filter.max_share go together")
        elif not 0 < recipe.max_share <= 1:
            problems.append(f"filter.max_share={recipe.max_share}: must be in (0, 1]")
    if recipe.balance_column:
        if recipe.top_k is None:
            problems.append("filter.balance_column needs filter.top_k (the total to split)")
        if not recipe.balance_groups:
            problems.append("filter.balance_column needs filter.balance_groups")
        labels = ORDINAL_LABELS.get(recipe.balance_column)
        for name, members in recipe.balance_groups.items():
            if labels and any(m not in labels for m in members):
                problems.append(
                    f"filter.balance_groups.{name}: {recipe.balance_column} labels are "
                    f"{list(labels)}"
                )
    return problems


@dataclass
class Selection:
    """Per-row outcome in table order; `reasons[i]` is None exactly when row i is kept."""

    kept: np.ndarray  # bool
    reasons: list[str | None]
    details: list[str | None]
    missing_columns: list[str]

    @property
    def num_kept(self) -> int:
        return int(self.kept.sum())

    def drop_counts(self) -> dict[str, int]:
        return dict(Counter(r for r in self.reasons if r is not None))


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows)
    column = table.column(name).combine_chunks()
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_nan(column), None, column)
    return column


def _mask(values: pa.Array) -> np.ndarray:
    return values.to_numpy(zero_copy_only=False).astype(bool)


def _exempt(table: pa.Table, cond: Condition) -> np.ndarray:
    """Rows the condition's `unless` clause lets through whatever its column holds."""
    if not cond.unless_column:
        return np.zeros(table.num_rows, dtype=bool)
    values = pc.is_in(_column(table, cond.unless_column), value_set=pa.array(cond.unless_in))
    return _mask(pc.fill_null(values, False))


def _passes(column: pa.Array, cond: Condition) -> tuple[np.ndarray, np.ndarray]:
    """(passes, unknown_label) masks over the rows; nulls pass nothing."""
    unknown = np.zeros(len(column), dtype=bool)
    labels = ORDINAL_LABELS.get(cond.column)
    if cond.op in SET_OPS:
        result = pc.is_in(column, value_set=pa.array(list(cond.value)))
        if cond.op == "not_in":
            result = pc.invert(result)
    elif cond.op == "not_endswith":
        trimmed = pc.utf8_rtrim_whitespace(column.cast(pa.string()))
        result = pc.invert(pc.ends_with(trimmed, pattern=cond.value))
    elif cond.op in ("contains", "not_contains"):  # case-sensitive substring
        result = pc.match_substring(column.cast(pa.string()), pattern=cond.value)
        if cond.op == "not_contains":
            result = pc.invert(result)
    elif cond.op == "newlines_lt":
        result = pc.less(pc.count_substring(column.cast(pa.string()), pattern="\n"), cond.value)
    elif labels:
        ranks = pc.index_in(column.cast(pa.string()), value_set=pa.array(labels))
        unknown = _mask(column.is_valid()) & _mask(ranks.is_null())
        result = COMPARISONS[cond.op](ranks, labels.index(cond.value))
    else:
        value = pa.scalar(cond.value)
        result = COMPARISONS[cond.op](column, value.cast(column.type))
    return _mask(pc.fill_null(result, False)) & _mask(column.is_valid()), unknown


def response_lengths(table: pa.Table, length_column: str) -> np.ndarray:
    """Characters per response: `length_column` where set, else len(response)."""
    counted = pc.utf8_length(_column(table, "response").cast(pa.string()))
    lengths = pc.coalesce(_column(table, length_column).cast(pa.int64()), counted)
    return pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _top_k_longest(candidates: np.ndarray, lengths, uuids, k: int) -> np.ndarray:
    """Rows among `candidates` with the k longest responses; ties go to the smaller uuid."""
    if len(candidates) <= k:
        return candidates
    order = np.lexsort((uuids[candidates], -lengths[candidates]))
    return candidates[order[:k]]


class _Fates:
    """Each row's first drop reason and detail, filled stage by stage."""

    def __init__(self, n: int):
        self.alive = np.ones(n, dtype=bool)
        self.reasons: list[str | None] = [None] * n
        self.details: list[str | None] = [None] * n

    def drop(self, mask: np.ndarray, reason: str, values: pa.Array | None = None) -> None:
        rows = np.flatnonzero(self.alive & mask)
        for i in rows.tolist():
            self.reasons[i] = reason
            if values is not None:
                value = values[i].as_py()
                self.details[i] = None if value is None else str(value)
        self.alive[rows] = False


@dataclass
class RowStages:
    """A table after the stages that look at one row at a time (conditions, truncation, balance
    groups); `keys` holds what the global top-k needs of every row still alive."""

    fates: _Fates
    missing_columns: list[str]
    keys: TopKKeys | None  # None without top_k and balance_by
    balance_by: str | None = None


@dataclass
class TopKKeys:
    """Per-row top-k keys: uuid, response characters, membership of each balance group."""

    uuids: pa.Array
    lengths: np.ndarray
    groups: list[np.ndarray]  # one bool mask per balance group; empty without balance_column
    labels: pa.Array | None = None  # balance_by's values as strings (null: "null")

    def take(self, rows: np.ndarray) -> TopKKeys:
        at = pa.array(rows, pa.int64())
        return TopKKeys(
            self.uuids.take(at),
            self.lengths[rows],
            [g[rows] for g in self.groups],
            None if self.labels is None else self.labels.take(at),
        )

    @staticmethod
    def concat(parts: list[TopKKeys]) -> TopKKeys:
        groups = len(parts[0].groups) if parts else 0
        labelled = bool(parts) and parts[0].labels is not None
        return TopKKeys(
            pa.concat_arrays([p.uuids for p in parts]) if parts else pa.array([], pa.string()),
            np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64),
            [np.concatenate([p.groups[g] for p in parts]) for g in range(groups)],
            pa.concat_arrays([p.labels for p in parts]) if labelled else None,
        )


def row_stages(table: pa.Table, recipe: FilterConfig) -> RowStages:
    """Stages 1 and 2 of the module docstring, and the balance groups' null / outside drops:
    everything but the top-k itself, which needs every row of the run."""
    n = table.num_rows
    fates = _Fates(n)
    needed = {c.column for c in recipe.conditions} | {recipe.balance_column or "uuid"}
    needed |= {recipe.balance_by} if recipe.balance_by else set()
    needed |= {c.unless_column for c in recipe.conditions if c.unless_column}
    missing = sorted(needed - set(table.column_names))
    for cond in recipe.conditions:
        column = _column(table, cond.column)
        exempt = _exempt(table, cond)
        fates.drop(_mask(column.is_null()) & ~exempt, f"{cond.column} is null")
        if pa.types.is_null(column.type):
            continue
        try:
            passes, unknown = _passes(column, cond)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise ConfigError(
                f"filter condition '{describe(cond)}': {cond.column} is {column.type}, "
                f"which cannot be compared with {cond.value!r} ({err})"
            ) from err
        fates.drop(unknown & ~exempt, f"{cond.column} unknown label", column)
        fates.drop(~passes & ~exempt, describe(cond), column)
    if recipe.exclude_truncated:
        finish = _column(table, "response_finish_reason").cast(pa.string())
        fates.drop(_mask(pc.fill_null(pc.equal(finish, "length"), False)), TRUNCATED)
    if recipe.top_k is None and not recipe.balance_by:
        return RowStages(fates, missing, None)

    groups = []
    if recipe.balance_column:
        column = _column(table, recipe.balance_column)
        fates.drop(_mask(column.is_null()), f"{recipe.balance_column} is null")
        for members in recipe.balance_groups.values():
            in_group = pc.is_in(column, value_set=pa.array(list(members)))
            groups.append(_mask(pc.fill_null(in_group, False)))
        # Rows outside every group are no group's candidates, so dropping them before the
        # top-k (rather than after, as one might read stage 3) changes no outcome.
        grouped = np.logical_or.reduce(groups) if groups else np.zeros(n, dtype=bool)
        fates.drop(~grouped, f"{recipe.balance_column} not in balance groups", column)
    uuids = _column(table, "uuid").cast(pa.string())
    labels = None
    if recipe.balance_by:
        labels = pc.fill_null(_column(table, recipe.balance_by).cast(pa.string()), "null")
    keys = TopKKeys(uuids, response_lengths(table, recipe.length_column), groups, labels)
    return RowStages(fates, missing, keys, recipe.balance_by)


def _uuids(keys: TopKKeys) -> np.ndarray:
    return np.asarray(keys.uuids.to_pylist(), dtype=object)


def share_cap(counts: np.ndarray, max_share: float, top_k: int | None) -> int:
    """The largest cap c with c <= max_share x min(top_k, sum(min(count, c))): the rows a label
    may keep so that none holds more than max_share of what is kept (0 with too few labels)."""
    if counts.size == 0:
        return 0
    limit = np.inf if top_k is None else top_k

    def fits(c: int) -> bool:
        return c <= max_share * min(limit, np.minimum(counts, c).sum()) + 1e-9

    lo, hi = 0, int(counts.max())
    while lo < hi:  # fits() holds on [0, c*] (a concave slack), so bisect for c*
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def capped_winners(keys: TopKKeys, recipe: FilterConfig) -> np.ndarray:
    """Positions in `keys` that balance_by's cap keeps: each label's `share_cap` longest."""
    uuids = _uuids(keys)
    codes = keys.labels.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    counts = np.bincount(codes) if codes.size else np.zeros(0, dtype=np.int64)
    cap = share_cap(counts, recipe.max_share, recipe.top_k)
    everyone = np.arange(len(codes))
    kept = [
        _top_k_longest(everyone[codes == g], keys.lengths, uuids, cap) for g in range(len(counts))
    ]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def top_k_winners(keys: TopKKeys, recipe: FilterConfig, candidates=None) -> np.ndarray:
    """Rows of `keys` (every one still alive; `candidates`: only those positions) that the
    top-k keeps, by position in `keys`."""
    uuids = _uuids(keys)
    everyone = np.arange(len(keys.lengths)) if candidates is None else candidates
    if not recipe.balance_column:
        return _top_k_longest(everyone, keys.lengths, uuids, recipe.top_k)
    shares = _balanced_shares(recipe.top_k, len(recipe.balance_groups))
    winners = [
        _top_k_longest(everyone[in_group[everyone]], keys.lengths, uuids, share)
        for in_group, share in zip(keys.groups, shares, strict=True)
    ]
    return np.concatenate(winners) if winners else np.zeros(0, dtype=np.int64)


@dataclass
class Winners:
    """Positions in the alive rows' keys: those the global stages keep, and those the
    balance_by cap dropped (the rest of the alive rows fall below the top-k)."""

    kept: np.ndarray
    capped: np.ndarray


def global_winners(keys: TopKKeys, recipe: FilterConfig) -> Winners:
    """The stages that need every alive row: balance_by's cap, then the top-k."""
    everyone = np.arange(len(keys.lengths))
    pool, capped = everyone, np.zeros(0, dtype=np.int64)
    if recipe.balance_by:
        pool = capped_winners(keys, recipe)
        capped = np.setdiff1d(everyone, pool)
    kept = pool if recipe.top_k is None else top_k_winners(keys, recipe, pool)
    return Winners(np.asarray(kept, dtype=np.int64), capped)


def finish(stages: RowStages, chosen: np.ndarray | None, capped=None) -> Selection:
    """The Selection of a table whose global winners are `chosen` (a bool mask; None without
    top_k and balance_by): `capped` rows (a bool mask) are dropped as over max_share, every
    other alive row as below the top-k."""
    fates = stages.fates
    if capped is not None and capped.any():
        reason = OVER_SHARE.format(column=stages.balance_by)
        fates.drop(capped, reason, stages.keys.labels)
    if chosen is not None:
        fates.drop(~chosen, BELOW_TOP_K, pa.array(stages.keys.lengths))
    return Selection(
        kept=fates.alive,
        reasons=fates.reasons,
        details=fates.details,
        missing_columns=stages.missing_columns,
    )


def _masks(n: int, rows: np.ndarray, winners: Winners) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, capped) bool masks over n rows from positions in `rows` (the alive rows)."""
    chosen, capped = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    chosen[rows[winners.kept]] = True
    capped[rows[winners.capped]] = True
    return chosen, capped


def select_rows(table: pa.Table, recipe: FilterConfig) -> Selection:
    """Apply `recipe` to `table`; see the module docstring for the stages and reasons."""
    stages = row_stages(table, recipe)
    if stages.keys is None:
        return finish(stages, None)
    alive = np.flatnonzero(stages.fates.alive)
    winners = global_winners(stages.keys.take(alive), recipe)
    return finish(stages, *_masks(table.num_rows, alive, winners))


def select_parts(
    read: Callable[[int], pa.Table], parts: int, recipe: FilterConfig
) -> Iterator[tuple[int, Selection]]:
    """`select_rows` over the concatenation of `read(0) .. read(parts - 1)`, one part in memory
    at a time: yields (part, its Selection) in part order, equal to the matching slice of
    `select_rows` on the whole table. With top_k or balance_by, every part is read twice: once
    for the keys of its rows that pass the row stages, once (after the global stages) to yield
    it."""
    chosen = capped = None  # run-wide masks of the global stages' winners and capped rows
    if (recipe.top_k is not None or recipe.balance_by) and parts:
        keys, rows, offset = [], [], 0
        for i in range(parts):
            stages = row_stages(read(i), recipe)
            alive = np.flatnonzero(stages.fates.alive)
            keys.append(stages.keys.take(alive))
            rows.append(alive + offset)
            offset += len(stages.fates.alive)
        winners = global_winners(TopKKeys.concat(keys), recipe)
        chosen, capped = _masks(offset, np.concatenate(rows), winners)
    offset = 0
    for i in range(parts):
        table = read(i)
        stages = row_stages(table, recipe)
        here = slice(offset, offset + table.num_rows)
        offset += table.num_rows
        if chosen is None:
            yield i, finish(stages, None)
        else:
            yield i, finish(stages, chosen[here], capped[here])


def _balanced_shares(total: int, groups: int) -> list[int]:
    """Equal shares of `total`; the first groups take the remainder."""
    return [total // groups + (1 if i < total % groups else 0) for i in range(groups)]
