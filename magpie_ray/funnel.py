"""The row funnel of a run: requested, generated, dropped by reason, tagged, near-duplicates,
removed by each filter condition, kept, and written per export file.

One reader for the run summary, the report and the dataset card, so the three give the same
figures: row counts come from the part files' footers (no rows are read), drop reasons from the
`dropped/<step>/` parts' `reason` column, and the global steps' figures from the manifests they
wrote when they finished (`deduped/`, `selected/`, `exports/`). A step that has not finished
gives None, not zero.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from .export_writer import EXPORT_DIR
from .storage import RunStore


@dataclass(frozen=True)
class Funnel:
    requested: int | None  # generate.num_samples (None: not known to the caller)
    generated: int  # rows in generated/
    generate_drops: dict[str, int] = field(default_factory=dict)  # reason -> rows
    tagged: int | None = None  # rows in tagged/ (None: no tag step output)
    deduped: int | None = None  # rows the dedup step saw
    near_duplicates: int | None = None  # rows that are not their cluster's canonical row
    selected_from: int | None = None  # rows the select step saw
    recipe: str | None = None  # the filter recipe's name
    select_drops: dict[str, int] = field(default_factory=dict)  # condition -> rows removed
    kept: int | None = None  # rows the filter kept
    exports: dict[str, int] = field(default_factory=dict)  # file -> records written
    left_out: dict[str, int] = field(default_factory=dict)  # file -> kept rows it leaves out

    def stages(self) -> list[tuple[str, int]]:
        """(stage, rows) in order, the stages that ran: what every reader shows."""
        rows = [] if self.requested is None else [("requested", self.requested)]
        rows.append(("generated (kept by the generate step)", self.generated))
        rows += [(f"dropped at generation: {r}", n) for r, n in _by_count(self.generate_drops)]
        if self.tagged is not None:
            rows.append(("tagged", self.tagged))
        if self.deduped is not None:
            rows.append(("seen by dedup", self.deduped))
            rows.append(("near-duplicates (not their cluster's first row)", self.near_duplicates))
        if self.selected_from is not None:
            rows.append((f"seen by the filter ({self.recipe})", self.selected_from))
            rows += [(f"removed by the filter: {r}", n) for r, n in _by_count(self.select_drops)]
            rows.append(("kept by the filter", self.kept))
        for file, records in self.exports.items():
            left = self.left_out.get(file)
            note = f" ({left} kept rows left out)" if left else ""
            rows.append((f"written to {file}{note}", records))
        return rows


def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def count_rows(store: RunStore, directory: str) -> int | None:
    """Rows in a folder's part files, from their footers; None without parts."""
    files = store.part_files(directory)
    if not files:
        return None
    return sum(pq.read_metadata(f, filesystem=store.fs).num_rows for f in files)


def drop_reasons(store: RunStore, step: str) -> dict[str, int]:
    """Rows per reason in `dropped/<step>/`."""
    reasons: Counter[str] = Counter()
    for path in store.part_files(store.dropped_dir(step)):
        column = pq.read_table(path, columns=["reason"], filesystem=store.fs).column(0)
        reasons.update(column.to_pylist())
    return dict(reasons)


def _stats(store: RunStore, directory: str) -> dict:
    return (store.read_manifest(directory) or {}).get("stats") or {}


def read_funnel(store: RunStore, requested: int | None = None) -> Funnel:
    """The funnel of the run in `store`, as its files and manifests hold it now."""
    dedup = _stats(store, store.kept_dir("dedup"))
    select = _stats(store, store.kept_dir("select"))
    export = _stats(store, posixpath.join(store.root, EXPORT_DIR))
    return Funnel(
        requested=requested,
        generated=count_rows(store, store.kept_dir("generate")) or 0,
        generate_drops=drop_reasons(store, "generate"),
        tagged=count_rows(store, store.kept_dir("tag")),
        deduped=dedup.get("rows"),
        near_duplicates=dedup.get("duplicates"),
        selected_from=select.get("rows"),
        recipe=select.get("recipe"),
        select_drops=dict(select.get("drops") or {}) if select else {},
        kept=select.get("kept"),
        exports=dict(export.get("files") or {}),
        left_out=dict(export.get("left_out") or {}),
    )


def funnel_lines(funnel: Funnel) -> list[str]:
    """The funnel as the console prints it: one `  stage: rows` line per stage."""
    return [f"  {stage}: {rows}" for stage, rows in funnel.stages()]
