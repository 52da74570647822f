"""Dedup step: the one global step. Every `tagged/` part in, one `deduped/` part per input out.

Reads `uuid` and the embedding column (`dedup.embedding_column`: list<float32>, one instruction
embedding per row, L2-normalised again here; null, empty, zero or non-finite = no embedding) of
every tagged part, a part at a time into one float32 matrix (rows x dim x 4 B: what grows with
the run), and runs `dedup.find_near_duplicates` over all of them. Then writes
`deduped/<same part name>`: every tagged column, in the same row order, plus

    min_neighbor_distance  float32  squared L2 to the nearest other row (null: no embedding or lone)
    repeat_count           int64    other rows under dedup.threshold, capped at dedup.k
    min_similar_uuid       string   canonical uuid of the row's duplicate cluster (null: none)
    is_canonical           bool     one True per cluster; null for a row without an embedding
    topic                  int32    its topic cluster (`topics.py`, with dedup.topics; null: no
                                    embedding); `DedupStats.topics` gives each one's size, top
                                    task category and most central instruction

No row is dropped here: the select step filters on these columns (its presets keep canonical
rows, and count rows without an embedding under "is_canonical is null").

Resume: `deduped/_manifest.json` names the tagged parts (name, size) and the dedup config the
output was made from and is written last. A rerun with the same inputs and config does nothing;
any change recomputes everything (dedup is global) and removes parts whose input is gone.
On a Ray cluster the step runs as one task with `dedup.num_cpus` / `dedup.num_gpus`.
"""

from __future__ import annotations

import posixpath
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import ConfigError, DedupConfig
from ..storage import RunStore

STEP = "dedup"
INPUT_STEP = "tag"
DEDUP_FIELDS = [
    pa.field("min_neighbor_distance", pa.float32()),
    pa.field("repeat_count", pa.int64()),
    pa.field("min_similar_uuid", pa.string()),
    pa.field("is_canonical", pa.bool_()),
]


TOPIC_FIELD = pa.field("topic", pa.int32())
CENTRAL_CHARS = 300


@dataclass(frozen=True)
class DedupStats:
    """What the dedup output holds; `skipped` when this invocation found it already done."""

    rows: int
    rows_without_embedding: int
    duplicate_clusters: int  # clusters of two or more rows
    duplicates: int  # rows that are not their cluster's canonical row
    search: str  # the search plan used
    seconds: float  # the invocation that computed it
    skipped: bool = False
    # topic clusters, largest first: {topic, rows, top_task_category, central_instruction}
    topics: list[dict] = field(default_factory=list)


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(has_embedding mask, (rows with one, d) float32 unit vectors) from a list column."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(column)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    present = lengths > 0
    if not present.any():
        return present, np.zeros((0, 0), dtype=np.float32)
    dims = set(lengths[present].tolist())
    if len(dims) > 1:
        raise ValueError(f"embeddings of different sizes {sorted(dims)} in one run")
    (dim,) = dims
    values = pc.list_flatten(column.filter(pa.array(present))).to_numpy(zero_copy_only=False)
    vectors = values.astype(np.float32, copy=False).reshape(-1, dim)
    norms = np.linalg.norm(vectors, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    mask = np.zeros(n, dtype=bool)
    mask[np.flatnonzero(present)[usable]] = True
    return mask, vectors[usable] / norms[usable, None]


def _dedup_columns(n: int, has_embedding: np.ndarray, result) -> list[pa.Array]:
    """The four dedup columns over all n rows, null where a row has no embedding."""
    rows = np.flatnonzero(has_embedding)
    distance = np.full(n, np.nan, dtype=np.float32)
    distance[rows] = result.min_neighbor_distance
    repeats = np.zeros(n, dtype=np.int64)
    repeats[rows] = result.repeat_count
    similar: list[str | None] = [None] * n
    canonical = np.zeros(n, dtype=bool)
    canonical[rows] = result.is_canonical
    for i, uuid in zip(rows.tolist(), result.min_similar_uuid, strict=True):
        similar[i] = uuid
    missing = ~has_embedding
    return [
        pa.array(distance, mask=np.isnan(distance)),
        pa.array(repeats, mask=missing),
        pa.array(similar, type=pa.string()),
        pa.array(canonical, mask=missing),
    ]


class _Topics:
    """The topic column over all rows, and each topic's task categories and central instruction
    gathered as the parts are written (`read`)."""

    def __init__(self, n: int, has_embedding: np.ndarray, vectors: np.ndarray, seed: int):
        from ..topics import assign_topics, central_rows, topic_count

        self.k = topic_count(len(vectors))
        labels, distances = assign_topics(vectors, self.k, seed)
        rows = np.flatnonzero(has_embedding)
        topic = np.zeros(n, dtype=np.int32)
        topic[rows] = labels
        self.column = pa.array(topic, mask=~has_embedding)
        self.sizes = np.bincount(labels, minlength=self.k) if self.k else np.zeros(0, np.int64)
        central = central_rows(labels, distances, self.k)
        self.central = {int(rows[c]): t for t, c in enumerate(central.tolist()) if c >= 0}
        self.categories = [Counter() for _ in range(self.k)]
        self.texts: dict[int, str] = {}

    def read(self, part: pa.Table, offset: int) -> None:
        topic = part.column("topic").to_pylist()
        if "task_category" in part.column_names:
            for t, category in zip(topic, part.column("task_category").to_pylist(), strict=True):
                if t is not None and category is not None:
                    self.categories[t][category] += 1
        rows = [r for r in self.central if offset <= r < offset + part.num_rows]
        for row in rows if "instruction" in part.column_names else []:
            text = part.column("instruction")[row - offset].as_py() or ""
            self.texts[self.central[row]] = " ".join(text.split())[:CENTRAL_CHARS]

    def summary(self) -> list[dict]:
        order = sorted(range(self.k), key=lambda t: (-int(self.sizes[t]), t))
        return [
            {
                "topic": t,
                "rows": int(self.sizes[t]),
                "top_task_category": (self.categories[t].most_common(1) or [(None, 0)])[0][0],
                "central_instruction": self.texts.get(t),
            }
            for t in order
            if self.sizes[t]
        ]


def dedup_run(run_uri: str, cfg: DedupConfig) -> DedupStats:
    """Read every tagged part, search, write every deduped part; or nothing if already done."""
    store = RunStore(run_uri)
    source, target = store.kept_dir(INPUT_STEP), store.kept_dir(STEP)
    parts = store.part_files(source)
    if not parts:
        raise ConfigError(f"no tagged parts in {source}: run the tag step first (steps=[tag,...])")
    fingerprint = {"inputs": store.fingerprint(source), "config": asdict(cfg)}
    return store.once(target, fingerprint, DedupStats, lambda: _dedup(store, parts, cfg))


def _dedup(store: RunStore, parts: list[str], cfg: DedupConfig) -> DedupStats:
    from ..near_duplicates import find_near_duplicates  # faiss loads only where the step runs

    started = time.perf_counter()
    target = store.kept_dir(STEP)
    # One part's embeddings at a time into unit vectors, then one matrix: the run's vectors are
    # held twice at most (the parts' blocks, then the matrix), never as Arrow lists as well.
    part_uuids, masks, blocks = [], [], []
    for p in parts:
        key = pq.read_table(p, columns=["uuid", cfg.embedding_column], filesystem=store.fs)
        mask, block = embedding_matrix(key.column(cfg.embedding_column))
        part_uuids.append(key.column("uuid").combine_chunks())
        masks.append(mask)
        blocks.append(block)
        del key
    dims = sorted({b.shape[1] for b in blocks if len(b)})
    if len(dims) > 1:
        raise ValueError(f"embeddings of different sizes {dims} in one run")
    blocks = [b for b in blocks if len(b)]
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    del blocks
    has_embedding = np.concatenate(masks)
    uuids = pa.concat_arrays(part_uuids).to_pylist()
    embedded = [u for u, ok in zip(uuids, has_embedding.tolist(), strict=True) if ok]
    result = find_near_duplicates(embedded, vectors, cfg)
    columns = _dedup_columns(len(uuids), has_embedding, result)
    fields = list(DEDUP_FIELDS)
    topics = None
    if cfg.topics:
        topics = _Topics(len(uuids), has_embedding, vectors, cfg.seed)
        columns.append(topics.column)
        fields.append(TOPIC_FIELD)
    del vectors

    offset = 0
    for path, key_uuids in zip(parts, part_uuids, strict=True):
        part = pq.read_table(path, filesystem=store.fs)
        if not part.column("uuid").combine_chunks().equals(key_uuids):
            raise RuntimeError(f"{path} changed while the dedup step was reading it")
        for dedup_field, column in zip(fields, columns, strict=True):
            values = column.slice(offset, part.num_rows)
            if dedup_field.name in part.column_names:
                part = part.drop_columns([dedup_field.name])
            part = part.append_column(dedup_field, values)
        if topics is not None:
            topics.read(part, offset)
        offset += part.num_rows
        store.write_part(target, posixpath.basename(path), part)
    store.remove_parts(target, {posixpath.basename(p) for p in parts})
    return DedupStats(
        rows=len(uuids),
        rows_without_embedding=int((~has_embedding).sum()),
        duplicate_clusters=result.num_clusters,
        duplicates=result.num_duplicates,
        search=result.plan.describe(),
        seconds=round(time.perf_counter() - started, 3),
        topics=topics.summary() if topics is not None else [],
    )


def run_step(cfg, store: RunStore) -> DedupStats:
    """The dedup step of `cfg` on `store`'s run: a Ray task when Ray is up, else in-process."""
    import ray

    if not ray.is_initialized():
        return dedup_run(store.run_uri, cfg.dedup)
    task = ray.remote(num_cpus=cfg.dedup.num_cpus, num_gpus=cfg.dedup.num_gpus)(dedup_run)
    return ray.get(task.remote(store.run_uri, cfg.dedup))
