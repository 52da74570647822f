"""Statistics of a folder of rows (the kept rows, `selected/`), read part by part: label shares
(task category, difficulty, input quality, safety, language), instruction and response length
percentiles, the reward's mean and percentiles, and the first rows as samples.

Only small columns are read (labels, lengths, the reward), a part at a time; the texts only
for the samples and for a row whose length column is null. Memory: one part's small columns
plus one number per row for each of the three distributions (24 bytes a row: 24 MB at a
million rows).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .labels import LABEL_ORDERS
from .storage import RunStore

SHARE_COLUMNS = ("task_category", "difficulty", "input_quality", "safety", "language")
LENGTHS = {"instruction": "instruction_length", "response": "response_length"}
REWARD = "instruct_reward"
PERCENTILES = (5, 25, 50, 75, 95)
SAMPLE_COLUMNS = ("uuid", "instruction", "response", *SHARE_COLUMNS, REWARD)


@dataclass(frozen=True)
class Distribution:
    count: int  # rows with a value
    mean: float | None
    percentiles: dict[int, float] = field(default_factory=dict)  # PERCENTILES -> value


@dataclass(frozen=True)
class KeptStats:
    rows: int
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> label -> rows
    lengths: dict[str, Distribution] = field(default_factory=dict)  # instruction/response chars
    reward: Distribution | None = None  # instruct_reward, where tagged
    samples: list[dict] = field(default_factory=list)

    def shares(self, column: str) -> list[tuple[str, int, float]]:
        """(label, rows, share of all rows) of a label column, the label's scale first ("null"
        counts the rows without the tag)."""
        counts = self.labels.get(column, {})
        order = list(LABEL_ORDERS.get(column, ()))
        labels = [k for k in order if k in counts]
        labels += sorted((k for k in counts if k not in order), key=lambda k: (-counts[k], k))
        return [(k, counts[k], counts[k] / self.rows if self.rows else 0.0) for k in labels]


def distribution(values: np.ndarray) -> Distribution:
    """Mean and PERCENTILES of `values` (linear interpolation, numpy's default)."""
    if values.size == 0:
        return Distribution(0, None)
    points = np.percentile(values, PERCENTILES)
    return Distribution(
        count=int(values.size),
        mean=float(values.mean()),
        percentiles={p: float(v) for p, v in zip(PERCENTILES, points, strict=True)},
    )


def _lengths(path: str, store: RunStore, table: pa.Table, text: str, column: str) -> np.ndarray:
    """Characters of `text` per row: the length column, len(text) where it is null or missing."""
    present = column in table.column_names
    lengths = table.column(column) if present else pa.nulls(table.num_rows, pa.int64())
    if lengths.null_count == 0:
        return lengths.to_numpy().astype(np.int64)
    texts = pq.read_table(path, columns=[text], filesystem=store.fs).column(0)
    filled = pc.if_else(lengths.is_null(), pc.utf8_length(texts), lengths)
    return pc.fill_null(filled, 0).to_numpy().astype(np.int64)


def kept_stats(store: RunStore, directory: str, samples: int = 3) -> KeptStats:
    """The statistics of the rows in `directory`'s parts, in part order."""
    labels: dict[str, Counter] = {}
    lengths: dict[str, list[np.ndarray]] = {name: [] for name in LENGTHS}
    rewards: list[np.ndarray] = []
    picked: list[dict] = []
    rows = 0
    for path in store.part_files(directory):
        names = set(pq.read_schema(path, filesystem=store.fs).names)
        small = [c for c in (*SHARE_COLUMNS, *LENGTHS.values(), REWARD) if c in names]
        table = pq.read_table(path, columns=small, filesystem=store.fs)
        rows += table.num_rows
        for column in SHARE_COLUMNS:
            if column in names:
                counts = labels.setdefault(column, Counter())
                for item in pc.value_counts(table.column(column)).to_pylist():
                    counts["null" if item["values"] is None else item["values"]] += item["counts"]
        for name, column in LENGTHS.items():
            if name in names or column in names:
                lengths[name].append(_lengths(path, store, table, name, column))
        if REWARD in names:
            reward = table.column(REWARD).drop_null()
            rewards.append(reward.to_numpy().astype(np.float64))
        if len(picked) < samples:
            wanted = [c for c in SAMPLE_COLUMNS if c in names]
            part = pq.read_table(path, columns=wanted, filesystem=store.fs)
            picked += part.slice(0, samples - len(picked)).to_pylist()
    return KeptStats(
        rows=rows,
        labels={c: dict(n) for c, n in labels.items()},
        lengths={
            name: distribution(np.concatenate(parts)) for name, parts in lengths.items() if parts
        },
        reward=distribution(np.concatenate(rewards)) if rewards else None,
        samples=picked,
    )
