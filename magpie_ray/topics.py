"""Topic clusters of the instruction embeddings: FAISS k-means (spherical, seeded) over the unit
vectors the dedup step already holds, k from the row count. Each row gets its cluster (`topic`);
each cluster its size and its most central row (the nearest to its centroid). Pure apart from
faiss; the dedup step writes the column and the clusters' summary (`DedupStats.topics`).
"""

from __future__ import annotations

import math

import numpy as np

MAX_TOPICS = 1024
ITERATIONS = 20


def topic_count(rows: int) -> int:
    """k for `rows` embedded rows: about sqrt(rows / 2), at least 2 (none under 2 rows), at
    most MAX_TOPICS (1M rows: 707)."""
    if rows < 2:
        return 0
    return max(2, min(MAX_TOPICS, rows, round(math.sqrt(rows / 2))))


def assign_topics(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(topic of each row, its squared distance to the topic's centroid) for unit `vectors`."""
    import faiss

    n, dim = vectors.shape
    if k < 1 or n == 0:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    # min_points_per_centroid=1: no warning for few rows; faiss samples 256 rows per centroid
    kmeans = faiss.Kmeans(
        dim,
        k,
        niter=ITERATIONS,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
    )
    kmeans.train(vectors)
    # spherical: an inner-product index over unit centroids; squared L2 = 2 - 2 x similarity
    similarity, topics = kmeans.index.search(vectors, 1)
    return topics[:, 0].astype(np.int64), (2 - 2 * similarity[:, 0]).astype(np.float32)


def central_rows(topics: np.ndarray, distances: np.ndarray, k: int) -> np.ndarray:
    """Per topic, the row nearest its centroid (-1 for a topic no row fell in)."""
    central = np.full(k, -1, dtype=np.int64)
    order = np.lexsort((np.arange(len(topics)), distances))  # nearest first, ties by row
    present, first = np.unique(topics[order], return_index=True)
    central[present] = order[first]
    return central
