"""Dedup maths on synthetic embeddings with planted duplicate clusters (no Ray, no files)."""

import numpy as np
import pytest

from magpie_ray.config import DedupConfig
from magpie_ray.near_duplicates import find_near_duplicates, plan_index

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _near(base: np.ndarray, sq_distance: float, rng) -> np.ndarray:
    """A unit vector at exactly `sq_distance` squared L2 from unit vector `base`."""
    noise = rng.standard_normal(base.shape)
    noise -= noise.dot(base) * base
    noise /= np.linalg.norm(noise)
    cos = 1 - sq_distance / 2
    return (cos * base + np.sqrt(1 - cos**2) * noise).astype(np.float32)


def _planted(seed=0, singles=40):
    """Singles far apart, plus clusters: an exact triple, a near pair, a chain of three."""
    rng = np.random.default_rng(seed)
    rows: dict[str, np.ndarray] = {}
    for i in range(singles):
        rows[f"single-{i:03d}"] = _unit(rng.standard_normal(DIM))
    triple = _unit(rng.standard_normal(DIM))
    rows.update({"t-c": triple, "t-a": triple.copy(), "t-b": triple.copy()})
    pair = _unit(rng.standard_normal(DIM))
    rows.update({"p-2": pair, "p-1": _near(pair, 0.02, rng)})
    # x ~ y and y ~ z under the threshold, x and z above it: one cluster through y.
    chain_y = _unit(rng.standard_normal(DIM))
    rows.update(
        {"c-y": chain_y, "c-x": _near(chain_y, 0.03, rng), "c-z": _near(chain_y, 0.03, rng)}
    )
    uuids = list(rows)
    return uuids, np.stack([rows[u] for u in uuids])


CLUSTERS = {"t": {"t-a", "t-b", "t-c"}, "p": {"p-1", "p-2"}, "c": {"c-x", "c-y", "c-z"}}


def _by_uuid(uuids, result):
    return {
        u: (
            float(result.min_neighbor_distance[i]),
            int(result.repeat_count[i]),
            result.min_similar_uuid[i],
            bool(result.is_canonical[i]),
        )
        for i, u in enumerate(uuids)
    }


def test_planted_clusters_keep_exactly_their_smallest_uuid():
    uuids, vectors = _planted()
    result = find_near_duplicates(uuids, vectors, DedupConfig(k=10))
    rows = _by_uuid(uuids, result)
    survivors = {u for u, r in rows.items() if r[3]}
    assert survivors == {u for u in uuids if u.startswith("single")} | {"t-a", "p-1", "c-x"}
    for members in CLUSTERS.values():
        canonical = min(members)
        assert {rows[u][2] for u in members} == {canonical}
    assert all(rows[u][2] is None for u in uuids if u.startswith("single"))
    assert result.num_clusters == 3 and result.num_duplicates == 2 + 1 + 2


def test_exact_duplicates_exclude_self_and_count_each_other():
    uuids, vectors = _planted()
    rows = _by_uuid(uuids, find_near_duplicates(uuids, vectors, DedupConfig(k=10)))
    for u in ("t-a", "t-b", "t-c"):
        distance, repeats, _, _ = rows[u]
        assert distance == pytest.approx(0.0, abs=1e-5)
        assert repeats == 2, "two other copies, self not counted"
    assert rows["p-1"][0] == pytest.approx(0.02, abs=1e-4)
    assert rows["p-1"][1] == 1
    # The chain's ends are each under the threshold only to the middle.
    assert rows["c-x"][1] == 1 and rows["c-y"][1] == 2
    assert all(rows[u][0] > 0.5 for u in uuids if u.startswith("single"))


def test_shuffled_rows_give_the_same_survivors_and_columns():
    uuids, vectors = _planted()
    cfg = DedupConfig(k=10)
    reference = _by_uuid(uuids, find_near_duplicates(uuids, vectors, cfg))
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(uuids))
        shuffled = [uuids[i] for i in perm]
        rows = _by_uuid(shuffled, find_near_duplicates(shuffled, vectors[perm], cfg))
        assert {u for u, r in rows.items() if r[3]} == {u for u, r in reference.items() if r[3]}
        for u in uuids:
            assert rows[u][1:] == reference[u][1:]
            assert rows[u][0] == pytest.approx(reference[u][0], abs=1e-5)


def test_more_exact_copies_than_k_still_form_one_cluster():
    rng = np.random.default_rng(1)
    base = _unit(rng.standard_normal(DIM))
    uuids = [f"copy-{i:02d}" for i in range(12)] + ["other"]
    vectors = np.stack([base] * 12 + [_unit(rng.standard_normal(DIM))])
    result = find_near_duplicates(uuids, vectors, DedupConfig(k=3))
    assert result.repeat_count[:12].tolist() == [3] * 12, "capped at k"
    assert result.is_canonical.tolist() == [True] + [False] * 11 + [True]
    assert set(result.min_similar_uuid[:12]) == {"copy-00"}


def test_ivf_index_finds_the_same_planted_clusters():
    rng = np.random.default_rng(2)
    n_base = 3000
    base = _unit(rng.standard_normal((n_base, DIM)))
    partners = np.stack([_near(base[i], 0.01, rng) for i in range(100)])
    vectors = np.concatenate([base, partners])
    uuids = [f"b{i:05d}" for i in range(n_base)] + [f"d{i:05d}" for i in range(100)]
    cfg = DedupConfig(k=5, exact_max_rows=1000, rows_per_list=50, nprobe=4)
    result = find_near_duplicates(uuids, vectors, cfg, gpu=False)
    assert result.plan.kind == "ivf" and result.plan.nlist == 62
    assert result.num_duplicates == 100
    assert result.min_similar_uuid[n_base:] == uuids[:100]


def test_lone_and_empty_inputs():
    one = find_near_duplicates(["a"], np.ones((1, DIM), np.float32) / np.sqrt(DIM), DedupConfig())
    assert np.isnan(one.min_neighbor_distance[0]) and one.is_canonical.tolist() == [True]
    assert one.repeat_count.tolist() == [0] and one.min_similar_uuid == [None]
    none = find_near_duplicates([], np.zeros((0, DIM), np.float32), DedupConfig())
    assert none.num_rows == 0


def test_duplicate_uuids_are_rejected():
    with pytest.raises(ValueError, match="distinct"):
        find_near_duplicates(["a", "a"], np.eye(2, DIM, dtype=np.float32), DedupConfig())


def test_index_is_chosen_by_size_and_device():
    cfg = DedupConfig(exact_max_rows=1000, rows_per_list=100)
    assert plan_index(1000, cfg, gpu=False).kind == "flat"
    plan = plan_index(1_000_000, cfg, gpu=False)
    assert plan.kind == "ivf" and plan.nlist == 10_000 and plan.nprobe == cfg.nprobe
    assert plan_index(10, DedupConfig(index="ivf"), gpu=False).nlist == 1
    assert plan_index(10, cfg, gpu=True).kind == "gpu-knn"
    assert plan_index(10, DedupConfig(use_gpu=False), gpu=True).kind == "flat"


def test_knn_search_used_on_gpus_agrees_with_the_blas_search():
    """The gpu-knn plan's k-NN bookkeeping, run here on a CPU faiss index."""
    import faiss

    from magpie_ray.near_duplicates import knn_blocks

    uuids, vectors = _planted()
    order = np.argsort(uuids)
    x = vectors[order]
    index = faiss.IndexFlatL2(DIM)
    index.add(x)
    blas = find_near_duplicates(uuids, vectors, DedupConfig(), gpu=False)
    blocks = list(knn_blocks(index, x, k=10, threshold=0.05, batch_rows=7))
    min_distance = np.concatenate([b[1] for b in blocks])
    pairs = {(int(a), int(b)) for blk in blocks for a, b in zip(blk[3], blk[4], strict=True)}
    expected = blas.min_neighbor_distance[order]
    np.testing.assert_allclose(min_distance, expected, atol=1e-5)
    names = [uuids[i] for i in order]
    found = {(names[a], names[b]) for a, b in pairs}
    assert ("t-a", "t-b") in found and ("c-x", "c-y") in found and ("c-x", "c-z") not in found
    assert len(found) == 2 * (3 + 1 + 2), "each under-threshold pair, both directions"
