"""Near-duplicate instructions: neighbours over embeddings, clusters, one canonical row each.

Pure maths (numpy, scipy, faiss; no Ray, no files). Input: `uuids` (n distinct strings) and
`vectors`, an (n, d) float32 matrix of L2-normalised instruction embeddings. Output
(`NearDuplicates`), one value per input row, in input order:

- `min_neighbor_distance`: squared L2 distance to the nearest *other* row, as the reference (on
  unit vectors it is 2 - 2 cos, so the default threshold 0.05 means cos > 0.975); NaN for a lone
  row.
- `repeat_count`: other rows found closer than the threshold, capped at `k` (the reference
  counts them among its k=500 nearest neighbours).
- `min_similar_uuid`: the canonical uuid of the row's duplicate cluster; None when no other row
  is under the threshold (the released datasets' convention: a row survives when this is None
  or its own uuid).
- `is_canonical`: True for exactly one row per cluster and for every row without duplicates.

A cluster is a connected component of the graph joining every pair of rows found closer than the
threshold; its canonical row is its smallest uuid. Rows are sorted by uuid before anything else,
so every output is a function of the set of (uuid, vector) pairs, not of their order: shuffled
input gives the same survivors. A row's own entry is excluded by row id, never by position, so
exact duplicates (several rows at distance 0) count each other and not themselves.

Search plans (`plan_index`), all reporting the same columns:

- `flat` (exact, up to `exact_max_rows` rows on CPU): every row against every row, in blocks of
  `block_elements` distances computed as one matrix product each (BLAS).
- `ivf` (beyond): an inverted file whose lists overlap. `nlist` rows sampled (seeded) as
  centroids, an HNSW graph over them, and every row filed under its `nprobe` nearest centroids;
  a row is compared with every row filed under its own nearest centroid, one matrix product per
  list. A pair is found when either row's nearest centroid is among the other's `nprobe`, which
  near duplicates (distance ~0.2 against ~1.3 between unrelated rows) nearly always satisfy;
  `bench/dedup.py` measures the recall. Sampled centroids follow the data's density, which is
  all this partition needs; k-means would cost more than the search at 1M rows on a small CPU.
- `gpu-knn` (a GPU is visible, faiss has GPU support, `use_gpu` is not false): exact k-NN on the
  GPU (`IndexFlatL2`, k+1 neighbours per row); repeat_count and duplicate pairs come from those k.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .config import DedupConfig

HNSW_LINKS = 32


@dataclass(frozen=True)
class IndexPlan:
    """How a dataset of `n` rows is searched."""

    kind: str  # "flat" | "ivf" | "gpu-knn"
    nlist: int = 0
    nprobe: int = 0

    def describe(self) -> str:
        if self.kind == "flat":
            return "exact (BLAS blocks, CPU)"
        if self.kind == "gpu-knn":
            return "exact k-NN (faiss IndexFlatL2, GPU)"
        return f"IVF nlist={self.nlist} nprobe={self.nprobe} (HNSW centroids, CPU)"


@dataclass
class NearDuplicates:
    """Per-row dedup columns (input order) plus counts a run report can use."""

    min_neighbor_distance: np.ndarray  # float32, NaN for a lone row
    nearest_neighbor: np.ndarray  # int64 input row of the nearest other row, -1 if none
    repeat_count: np.ndarray  # int64
    min_similar_uuid: list[str | None]
    is_canonical: np.ndarray  # bool
    plan: IndexPlan

    @property
    def num_rows(self) -> int:
        return len(self.is_canonical)

    @property
    def num_clusters(self) -> int:
        """Duplicate clusters with two or more rows."""
        return len({u for u in self.min_similar_uuid if u is not None})

    @property
    def num_duplicates(self) -> int:
        """Rows that are not the canonical row of their cluster."""
        return int((~self.is_canonical).sum())


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def plan_index(n: int, cfg: DedupConfig, gpu: bool | None = None) -> IndexPlan:
    """gpu-knn on a GPU; else exact up to `exact_max_rows` (or `index=flat`), IVF beyond."""
    on_gpu = (gpu_available() if gpu is None else gpu) and cfg.use_gpu is not False
    if on_gpu:
        return IndexPlan(kind="gpu-knn")
    kind = cfg.index if cfg.index != "auto" else ("flat" if n <= cfg.exact_max_rows else "ivf")
    if kind == "flat":
        return IndexPlan(kind="flat")
    nlist = max(1, min(n, cfg.nlist or n // cfg.rows_per_list))
    return IndexPlan(kind="ivf", nlist=nlist, nprobe=min(cfg.nprobe, nlist))


@dataclass
class _Found:
    """Search output in sorted-row space."""

    min_distance: np.ndarray
    nearest: np.ndarray
    repeats: np.ndarray
    pairs_from: np.ndarray
    pairs_to: np.ndarray


def _compare_block(xq, q_ids, xc, c_ids, norms, threshold):
    """Rows q_ids against rows c_ids (sorted, containing every q_id), self excluded."""
    d2 = xq @ xc.T
    d2 *= -2
    d2 += norms[q_ids][:, None]
    d2 += norms[c_ids][None, :]
    np.maximum(d2, 0, out=d2)
    rows = np.arange(len(q_ids))
    d2[rows, np.searchsorted(c_ids, q_ids)] = np.inf
    nearest = d2.argmin(axis=1)
    min_distance = d2[rows, nearest]
    hit_q, hit_c = np.nonzero(d2 < threshold)
    nearest = np.where(np.isfinite(min_distance), c_ids[nearest], -1)
    return min_distance, nearest, q_ids[hit_q], c_ids[hit_c]


def _collect(n: int, blocks, k: int) -> _Found:
    min_distance = np.full(n, np.inf, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    pairs_from, pairs_to = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for q_ids, block_min, block_nearest, hit_from, hit_to in blocks:
        min_distance[q_ids] = block_min
        nearest[q_ids] = block_nearest
        pairs_from.append(hit_from)
        pairs_to.append(hit_to)
    src, dst = np.concatenate(pairs_from), np.concatenate(pairs_to)
    # A pair can be found from either row (or both): count each unordered pair once per row.
    pair_keys = np.unique(np.minimum(src, dst) * n + np.maximum(src, dst))
    first, second = pair_keys // n, pair_keys % n
    repeats = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
    return _Found(min_distance, nearest, np.minimum(repeats, k), first, second)


def _flat_blocks(x, norms, threshold, block_elements):
    n = len(x)
    ids = np.arange(n)
    step = max(1, block_elements // n)
    for start in range(0, n, step):
        q_ids = ids[start : start + step]
        yield (q_ids, *_compare_block(x[q_ids], q_ids, x, ids, norms, threshold))


def _ivf_blocks(x, norms, threshold, plan: IndexPlan, cfg: DedupConfig):
    n, dim = x.shape
    sample = np.sort(np.random.default_rng(cfg.seed).choice(n, plan.nlist, replace=False))
    quantizer = faiss.IndexHNSWFlat(dim, HNSW_LINKS)
    quantizer.add(x[sample])
    quantizer.hnsw.efSearch = max(cfg.hnsw_ef_search, plan.nprobe)
    _, lists = quantizer.search(x, plan.nprobe)
    home = lists[:, 0]
    by_home = np.argsort(home, kind="stable")
    home_bounds = np.searchsorted(home[by_home], np.arange(plan.nlist + 1))
    filed = lists.ravel()
    filed_rows = np.repeat(np.arange(n), plan.nprobe)[np.argsort(filed, kind="stable")]
    filed_bounds = np.searchsorted(np.sort(filed), np.arange(plan.nlist + 1))
    for c in range(plan.nlist):
        q_ids = by_home[home_bounds[c] : home_bounds[c + 1]]
        if len(q_ids):
            c_ids = filed_rows[filed_bounds[c] : filed_bounds[c + 1]]
            yield (q_ids, *_compare_block(x[q_ids], q_ids, x[c_ids], c_ids, norms, threshold))


def knn_blocks(index, x, k: int, threshold: float, batch_rows: int):
    """k-NN search of every row against `index` (holding x), k+1 results with self removed."""
    n = len(x)
    k = min(k, n - 1)
    for start in range(0, n, batch_rows):
        q_ids = np.arange(start, min(n, start + batch_rows))
        distances, labels = index.search(x[q_ids], k + 1)
        is_self = labels == q_ids[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)  # farthest if no self
        keep = np.ones(labels.shape, dtype=bool)
        keep[np.arange(len(q_ids)), drop] = False
        dist = np.maximum(distances[keep].reshape(len(q_ids), k), 0)
        lab = labels[keep].reshape(len(q_ids), k)
        dist[lab < 0] = np.inf
        under = dist < threshold
        min_distance = dist[:, 0]
        nearest = np.where(np.isfinite(min_distance), lab[:, 0], -1)
        yield q_ids, min_distance, nearest, np.repeat(q_ids, under.sum(axis=1)), lab[under]


def _gpu_knn_blocks(x, cfg: DedupConfig):
    resources = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(resources, 0, faiss.IndexFlatL2(x.shape[1]))
    index.add(x)
    batch_rows = max(1, cfg.block_elements // (cfg.k + 1))
    yield from knn_blocks(index, x, cfg.k, cfg.threshold, batch_rows)


def find_near_duplicates(
    uuids: list[str], vectors: np.ndarray, cfg: DedupConfig, gpu: bool | None = None
) -> NearDuplicates:
    """Dedup columns for every row; see the module docstring for their exact meaning."""
    n = len(uuids)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"vectors must be ({n}, d), got {vectors.shape}")
    names = np.asarray(uuids, dtype=object)
    order = np.argsort(names.astype(str), kind="stable")
    names = names[order]
    if n > 1 and (names[1:] == names[:-1]).any():
        raise ValueError("uuids must be distinct")
    plan = plan_index(n, cfg, gpu)
    x = np.ascontiguousarray(vectors[order], dtype=np.float32)
    norms = np.einsum("ij,ij->i", x, x)
    if n < 2:
        blocks = []
    elif plan.kind == "flat":
        blocks = _flat_blocks(x, norms, cfg.threshold, cfg.block_elements)
    elif plan.kind == "ivf":
        blocks = _ivf_blocks(x, norms, cfg.threshold, plan, cfg)
    else:
        blocks = _gpu_knn_blocks(x, cfg)
    return _clusters(names, order, _collect(n, blocks, cfg.k), plan)


def _clusters(names, order, found: _Found, plan: IndexPlan) -> NearDuplicates:
    """Connected components of the pairs, canonical = smallest uuid; back to input order."""
    n = len(names)
    graph = coo_matrix(
        (np.ones(len(found.pairs_from), dtype=np.int8), (found.pairs_from, found.pairs_to)),
        shape=(n, n),
    )
    _, component = connected_components(graph, directed=True, connection="weak")
    # Rows are in uuid order, so a component's smallest row is its smallest uuid.
    canonical_row = np.full(component.max(initial=0) + 1, n, dtype=np.int64)
    np.minimum.at(canonical_row, component, np.arange(n))
    canonical_of = canonical_row[component]
    in_cluster = np.bincount(component)[component] > 1
    similar = np.where(in_cluster, names[np.minimum(canonical_of, n - 1)], None)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    nearest = np.where(found.nearest >= 0, order[np.maximum(found.nearest, 0)], -1)
    min_distance = np.where(np.isfinite(found.min_distance), found.min_distance, np.nan)
    return NearDuplicates(
        min_neighbor_distance=min_distance.astype(np.float32)[inverse],
        nearest_neighbor=nearest[inverse],
        repeat_count=found.repeats[inverse],
        min_similar_uuid=similar[inverse].tolist(),
        is_canonical=(canonical_of == np.arange(n))[inverse],
        plan=plan,
    )
