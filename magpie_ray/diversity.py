"""How diverse the instructions are, for all generated rows (`deduped/`) and for the kept rows
(`selected/`), side by side: topic clusters (the dedup step's `topic` column) and the entropy of
their sizes, distinct-1 and distinct-2 of the instructions (distinct word uni- and bigrams over
all of them; words: lower-cased, split on white space), and the near-duplicate share (rows with
an embedding that are not their near-duplicate cluster's canonical row).

Read part by part (the `topic`, `is_canonical` and `instruction` columns); each part's distinct
n-grams are kept as 64-bit hashes (memory grows with the vocabulary, not the rows). The figures
are cached in `<run>/logs/diversity.json` with the fingerprints of both folders, so the summary,
the report and the dataset card read them once and agree.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.parquet as pq

from .storage import RunStore

CACHE = "logs/diversity.json"


@dataclass(frozen=True)
class Diversity:
    rows: int
    topics: int  # topic clusters with a row
    topic_entropy: float | None  # bits, of the cluster sizes
    topic_evenness: float | None  # entropy / log2(topics): 1 when every cluster is as large
    distinct_1: float | None
    distinct_2: float | None
    near_duplicate_share: float | None


def entropy_bits(counts: np.ndarray) -> float | None:
    counts = counts[counts > 0]
    if counts.size == 0:
        return None
    p = counts / counts.sum()
    return max(0.0, float(-(p * np.log2(p)).sum()))  # never -0.0


def ngram_hashes(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(unigram hashes, bigram hashes) of every instruction's words, in order."""
    ones, twos = [], []
    for text in texts:
        words = (text or "").lower().split()
        ones.extend(hash(w) for w in words)
        twos.extend(hash(pair) for pair in zip(words, words[1:], strict=False))
    return np.asarray(ones, dtype=np.int64), np.asarray(twos, dtype=np.int64)


def distinct(hashes: list[np.ndarray], total: int | None = None) -> float | None:
    """Distinct n-grams over all n-grams (`total`: their count, where `hashes` holds each
    part's distinct ones only)."""
    every = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.int64)
    total = every.size if total is None else total
    return None if total == 0 else float(np.unique(every).size / total)


def diversity_of(store: RunStore, directory: str) -> Diversity | None:
    """The figures of the rows in `directory`'s parts; None without parts."""
    files = store.part_files(directory)
    if not files:
        return None
    sizes: dict[int, int] = {}
    ones, twos = [], []  # each part's distinct n-grams: memory grows with the vocabulary
    totals = [0, 0]
    rows = embedded = not_canonical = 0
    for path in files:
        names = set(pq.read_schema(path, filesystem=store.fs).names)
        wanted = [c for c in ("topic", "is_canonical", "instruction") if c in names]
        table = pq.read_table(path, columns=wanted, filesystem=store.fs)
        rows += table.num_rows
        if "topic" in names:
            topics, counts = np.unique(table.column("topic").drop_null(), return_counts=True)
            for t, n in zip(topics.tolist(), counts.tolist(), strict=True):
                sizes[t] = sizes.get(t, 0) + n
        if "is_canonical" in names:
            canonical = table.column("is_canonical").drop_null()
            embedded += len(canonical)
            not_canonical += len(canonical) - int(np.asarray(canonical).sum())
        if "instruction" in names:
            one, two = ngram_hashes(table.column("instruction").to_pylist())
            totals[0], totals[1] = totals[0] + one.size, totals[1] + two.size
            ones.append(np.unique(one))
            twos.append(np.unique(two))
    counts = np.asarray(list(sizes.values()), dtype=np.int64)
    entropy = entropy_bits(counts)
    return Diversity(
        rows=rows,
        topics=len(sizes),
        topic_entropy=entropy,
        topic_evenness=None
        if entropy is None or len(sizes) < 2
        else entropy / math.log2(len(sizes)),
        distinct_1=distinct(ones, totals[0]),
        distinct_2=distinct(twos, totals[1]),
        near_duplicate_share=not_canonical / embedded if embedded else None,
    )


def read_diversity(store: RunStore) -> dict[str, Diversity]:
    """{"generated": ..., "kept": ...} for what the run holds (cached, see the module doc)."""
    sources = {"generated": store.kept_dir("dedup"), "kept": store.kept_dir("select")}
    key = {name: store.fingerprint(d) for name, d in sources.items()}
    path = posixpath.join(store.root, CACHE)
    if store.size(path) is not None:
        with store.fs.open_input_stream(path) as f:
            cached = json.loads(f.read().decode())
        if cached.get("key") == json.loads(json.dumps(key)):
            return {name: Diversity(**d) for name, d in cached["figures"].items()}
    figures = {name: diversity_of(store, d) for name, d in sources.items()}
    figures = {name: d for name, d in figures.items() if d is not None}
    if figures:
        text = json.dumps({"key": key, "figures": {n: asdict(d) for n, d in figures.items()}})
        store.write_text(CACHE, text + "\n")
    return figures


def _share(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def diversity_rows(figures: dict[str, Diversity]) -> list[tuple[str, str, str]]:
    """(figure, generated, kept) rows: what the summary, the report and the card show."""
    gen, kept = figures.get("generated"), figures.get("kept")

    def row(name: str, get) -> tuple[str, str, str]:
        return (name, get(gen) if gen else "", get(kept) if kept else "")

    return [
        row("rows", lambda d: f"{d.rows:,}"),
        row("topic clusters", lambda d: f"{d.topics:,}"),
        row("topic entropy (bits)", lambda d: _number(d.topic_entropy)),
        row("topic evenness (entropy / log2 clusters)", lambda d: _number(d.topic_evenness)),
        row("distinct-1", lambda d: _number(d.distinct_1)),
        row("distinct-2", lambda d: _number(d.distinct_2)),
        row("near-duplicate share", lambda d: _share(d.near_duplicate_share)),
    ]
