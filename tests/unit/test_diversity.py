"""Topic clusters and diversity figures on small known inputs: k from the row count, k-means that
finds well-separated groups, each group's most central row, entropy, distinct-n, the
near-duplicate share, the cache the summary, report and card share, and the dedup step's topic
column and clusters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from magpie_ray.config import DedupConfig
from magpie_ray.diversity import (
    distinct,
    diversity_of,
    diversity_rows,
    entropy_bits,
    ngram_hashes,
    read_diversity,
)
from magpie_ray.storage import RunStore
from magpie_ray.topics import assign_topics, central_rows, topic_count
from tests.helpers import tagged_rows, tagged_table


def test_topic_count_grows_as_the_square_root_of_the_rows():
    assert [topic_count(n) for n in (0, 1, 2, 32, 1_000_000, 10**8)] == [0, 0, 2, 4, 707, 1024]


def _groups(per_group: int = 20, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight groups around orthogonal directions; row 0 of each group is its centre."""
    rng = np.random.default_rng(seed)
    vectors, group = [], []
    for g in range(3):
        centre = np.eye(dim, dtype=np.float32)[g]
        noise = rng.normal(0, 0.05, (per_group, dim)).astype(np.float32)
        noise[0] = 0
        block = centre + noise
        vectors.append(block / np.linalg.norm(block, axis=1, keepdims=True))
        group += [g] * per_group
    return np.concatenate(vectors), np.array(group)


def _nearest_to_means(vectors: np.ndarray, group: np.ndarray) -> list[int]:
    """Per group, the row nearest its normalised mean (a spherical k-means centroid)."""
    nearest = []
    for g in sorted(set(group.tolist())):
        rows = np.flatnonzero(group == g)
        mean = vectors[rows].mean(axis=0)
        mean /= np.linalg.norm(mean)
        nearest.append(int(rows[np.argmin(((vectors[rows] - mean) ** 2).sum(axis=1))]))
    return nearest


def test_kmeans_finds_separated_groups_and_their_central_rows():
    vectors, group = _groups()
    topics, distances = assign_topics(vectors, 3, seed=0)
    # one topic per group, whatever the numbering
    assert {(g, t) for g, t in zip(group, topics, strict=True)} == {
        (g, topics[group == g][0]) for g in range(3)
    }
    assert len(set(topics.tolist())) == 3
    central = central_rows(topics, distances, 3)
    assert sorted(central.tolist()) == _nearest_to_means(vectors, group)
    assert np.array_equal(assign_topics(vectors, 3, seed=0)[0], topics)  # seeded: the same


def test_entropy_and_distinct_n_on_known_values():
    assert entropy_bits(np.array([1, 1])) == 1.0
    assert entropy_bits(np.array([4, 0])) == 0.0
    assert entropy_bits(np.array([2, 1, 1])) == 1.5
    assert entropy_bits(np.array([0])) is None
    ones, twos = ngram_hashes(["A b a B", None, ""])
    assert distinct([ones]) == 0.5  # a, b of 4 words
    assert distinct([twos]) == pytest.approx(2 / 3)  # (a b), (b a) of 3 bigrams
    assert distinct([]) is None


def _folder(store: RunStore, directory: str, topics, canonical, instructions) -> None:
    table = pa.table(
        {
            "uuid": [f"u{i}" for i in range(len(topics))],
            "topic": pa.array(topics, pa.int32()),
            "is_canonical": pa.array(canonical, pa.bool_()),
            "instruction": instructions,
        }
    )
    store.write_part(directory, "part-000000000-a.parquet", table.slice(0, 3))
    store.write_part(directory, "part-000000003-b.parquet", table.slice(3))


def test_generated_and_kept_side_by_side_and_cached(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    _folder(
        store,
        store.kept_dir("dedup"),
        [0, 0, 1, 1, 2, None],
        [True, False, True, True, False, None],
        ["a b", "a b", "c d", "e f", "a b", "g"],
    )
    _folder(store, store.kept_dir("select"), [0, 1, 1, 2], [True] * 4, ["a b", "c d", "e f", "h"])
    figures = read_diversity(store)
    gen, kept = figures["generated"], figures["kept"]
    assert (gen.rows, gen.topics, kept.topics) == (6, 3, 3)
    assert gen.topic_entropy == pytest.approx(1.5219, abs=1e-4)  # sizes 2, 2, 1
    assert kept.topic_entropy == pytest.approx(1.5)  # sizes 1, 2, 1
    assert gen.near_duplicate_share == pytest.approx(2 / 5)  # of the 5 rows with an embedding
    assert kept.near_duplicate_share == 0.0
    assert gen.distinct_1 == pytest.approx(7 / 11) and kept.distinct_2 == 1.0
    rows = {name: (a, b) for name, a, b in diversity_rows(figures)}
    assert rows["topic clusters"] == ("3", "3") and rows["near-duplicate share"] == (
        "40.0%",
        "0.0%",
    )
    # cached with both folders' fingerprints: another read gives the same without the parts
    assert (tmp_path / "run" / "logs" / "diversity.json").is_file()
    assert read_diversity(store) == figures
    _folder(store, store.kept_dir("select"), [0], [True], ["z"])  # parts change: recomputed
    assert read_diversity(store)["kept"].rows == 1 != figures["kept"].rows
    assert diversity_of(store, store.kept_dir("nothing")) is None


def test_the_dedup_step_writes_topics_and_their_clusters(tmp_path):
    from magpie_ray.steps import dedup as dedup_step

    vectors, group = _groups(per_group=6)  # 18 rows: k = 3
    rows = tagged_rows(vectors)
    for row, g in zip(rows, group, strict=True):
        row["embedding"] = [float(v) for v in vectors[int(row["index"])]]
        row["task_category"] = ["Math", "Coding & Debugging", "Planning"][g]
        row["instruction"] = f"group {g} row {row['index']}"
    store = RunStore(str(tmp_path / "run"))
    table = tagged_table(rows)
    store.write_part(store.kept_dir("tag"), "part-000000000-a.parquet", table.slice(0, 7))
    store.write_part(store.kept_dir("tag"), "part-000000007-b.parquet", table.slice(7))
    stats = dedup_step.dedup_run(store.run_uri, DedupConfig())
    deduped = store.read_parts(store.kept_dir("dedup"), columns=["topic", "task_category"])
    pairs = set(zip(deduped.column("topic").to_pylist(), group.tolist(), strict=True))
    assert len(pairs) == 3 and len({t for t, _ in pairs}) == 3  # topic <-> group, one to one
    categories = {0: "Math", 1: "Coding & Debugging", 2: "Planning"}
    by_topic = {t: g for t, g in pairs}
    central = _nearest_to_means(vectors, group)
    assert [t["rows"] for t in stats.topics] == [6, 6, 6]
    for topic in stats.topics:
        g = by_topic[topic["topic"]]
        assert topic["top_task_category"] == categories[g]
        assert topic["central_instruction"] == f"group {g} row {central[g]}"
