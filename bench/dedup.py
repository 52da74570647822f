"""Dedup at scale: the overlapping-IVF search vs exact search, synthetic planted duplicates.

Data (dim 384, seeded): unit vectors around 1,000 topic centres (cos to the centre ~0.6, as
sentence embeddings cluster by topic), then the last 1% of rows replaced by near copies of the
first 1% at squared L2 distances uniform in [0, 0.045) (one in ten an exact copy), so each
planted pair is under the 0.05 threshold.

Each variant runs `dedup.find_near_duplicates` in its own child process (so peak RSS is its own;
data generation is excluded from the time) and reports:

  recall     planted pairs that end in one cluster (the same min_similar_uuid) / planted pairs
  survivors  rows kept as canonical; exactly one per planted pair is expected
  vs exact   on the same data: rows whose nearest-neighbour distance matches exact search
             (within 1e-4), the ratio of the two distances (p50, p99; >= 1), and exact
             under-threshold neighbours that landed in the same cluster. Exact search of
             every row at 100k; at 1M exact search of a seeded sample of rows (half planted).

    .venv/bin/python bench/dedup.py --rows 100000 --exact all     # IVF, then exact on all rows
    .venv/bin/python bench/dedup.py --rows 1000000 --exact sample --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magpie_ray.config import DedupConfig  # noqa: E402
from magpie_ray.near_duplicates import find_near_duplicates  # noqa: E402

DIM = 384
TOPICS = 1000
PLANTED_FRACTION = 0.01
SAMPLE_QUERIES = 2000


def synthetic(rows: int, seed: int = 0) -> tuple[list[str], np.ndarray, int]:
    """(uuids, unit vectors, planted pairs); pair i is rows i and rows - planted + i."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.empty((rows, DIM), dtype=np.float32)
    step = 100_000
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * 0.07
        block = centres[rng.integers(0, TOPICS, stop - start)] + noise
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    planted = int(rows * PLANTED_FRACTION)
    originals = vectors[:planted]
    noise = rng.standard_normal((planted, DIM), dtype=np.float32)
    noise -= (noise * originals).sum(1, keepdims=True) * originals
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    sq = rng.uniform(0, 0.045, planted).astype(np.float32)
    sq[::10] = 0.0
    cos = (1 - sq / 2)[:, None]
    vectors[rows - planted :] = cos * originals + np.sqrt(1 - cos**2) * noise
    uuids = [f"{i:08d}-{(i * 2654435761) % 2**32:08x}" for i in rows_permuted(rows, seed)]
    return uuids, vectors, planted


def rows_permuted(rows: int, seed: int) -> np.ndarray:
    """uuid order unrelated to row order, so canonical choice is not trivially 'the original'."""
    return np.random.default_rng(seed + 1).permutation(rows)


def measure(rows: int, variant: str, exact: str, cfg: DedupConfig) -> dict:
    uuids, vectors, planted = synthetic(rows)
    run_cfg = replace(cfg, index="flat" if variant == "exact" else "ivf")
    started, cpu_started = time.perf_counter(), time.process_time()
    result = find_near_duplicates(uuids, vectors, run_cfg, gpu=False)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    similar = result.min_similar_uuid
    found = sum(
        similar[i] is not None and similar[i] == similar[rows - planted + i] for i in range(planted)
    )
    out = {
        "rows": rows,
        "variant": variant,
        "index": result.plan.describe(),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "data_gib": round(vectors.nbytes / 2**30, 2),
        "planted_pairs": planted,
        "planted_recall": round(found / planted, 5),
        "survivors": int(result.is_canonical.sum()),
        "expected_survivors": rows - planted,
        "clusters": result.num_clusters,
    }
    if variant != "exact":
        out.update(compare_with_exact(uuids, vectors, result, exact, cfg, planted))
        out["load_avg_1m_after_exact"] = round(os.getloadavg()[0], 2)
    return out


def compare_with_exact(uuids, vectors, result, exact: str, cfg: DedupConfig, planted: int):
    """Agreement with exact search: on every row (exact=all) or on a seeded sample of rows."""
    import faiss

    rows = len(uuids)
    if exact == "all":
        started, cpu_started = time.perf_counter(), time.process_time()
        truth = find_near_duplicates(uuids, vectors, replace(cfg, index="flat"), gpu=False)
        same_nn = np.isclose(truth.min_neighbor_distance, result.min_neighbor_distance, atol=1e-4)
        ratio = result.min_neighbor_distance / np.maximum(truth.min_neighbor_distance, 1e-6)
        under = cfg.threshold
        similar = truth.min_similar_uuid
        planted_in_truth = sum(
            similar[i] is not None and similar[i] == similar[rows - planted + i]
            for i in range(planted)
        )
        return {
            "exact_seconds": round(time.perf_counter() - started, 1),
            "exact_cpu_seconds": round(time.process_time() - cpu_started, 1),
            "exact_planted_recall": round(planted_in_truth / planted, 5),
            "exact_rows_compared": rows,
            "nn_distance_match": round(float(same_nn.mean()), 5),
            "nn_distance_ratio_p50_p99": [
                round(float(q), 4) for q in np.nanquantile(ratio, [0.5, 0.99])
            ],
            "nn_under_threshold_agreement": round(
                float(
                    (
                        (truth.min_neighbor_distance < under)
                        == (result.min_neighbor_distance < under)
                    ).mean()
                ),
                5,
            ),
            "same_survivors_as_exact": bool((truth.is_canonical == result.is_canonical).all()),
            "exact_clusters": truth.num_clusters,
            "repeat_count_match": round(
                float((truth.repeat_count == result.repeat_count).mean()), 5
            ),
        }
    rng = np.random.default_rng(7)
    half = SAMPLE_QUERIES // 2
    queries = np.concatenate(
        [rng.choice(planted, half, replace=False), rng.choice(rows, half, replace=False)]
    )
    index = faiss.IndexFlatL2(DIM)
    index.add(vectors)
    distances, labels = index.search(vectors[queries], 11)
    matches = under_total = under_same_cluster = 0
    ratios = []
    similar = result.min_similar_uuid
    for q, dist, lab in zip(queries, distances, labels, strict=True):
        others = lab != q
        dist, lab = np.maximum(dist[others][:10], 0), lab[others][:10]
        matches += abs(dist[0] - result.min_neighbor_distance[q]) < 1e-4
        ratios.append(result.min_neighbor_distance[q] / max(dist[0], 1e-6))
        for d, j in zip(dist, lab, strict=True):
            if d < cfg.threshold:
                under_total += 1
                under_same_cluster += similar[q] is not None and similar[q] == similar[j]
    return {
        "exact_rows_compared": len(queries),
        "nn_distance_match": round(matches / len(queries), 5),
        "nn_distance_ratio_p50_p99": [
            round(float(q), 4) for q in np.nanquantile(ratios, [0.5, 0.99])
        ],
        "exact_under_threshold_pairs": under_total,
        "edge_recall_vs_exact": round(under_same_cluster / max(under_total, 1), 5),
    }


def run_child(rows: int, variant: str, exact: str, cfg: DedupConfig, threads: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--rows",
        str(rows),
        "--exact",
        exact,
        "--config",
        json.dumps(asdict(cfg)),
    ]
    env = dict(os.environ)
    if threads:
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def conditions() -> dict:
    load1, load5, _ = os.getloadavg()
    import faiss

    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or ''}",
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_avg_1m_5m_at_start": [round(load1, 2), round(load5, 2)],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--exact", choices=["all", "sample"], default="all")
    parser.add_argument(
        "--variants", default="ivf", help="comma list: ivf, exact (ivf also runs exact to compare)"
    )
    parser.add_argument("--k", type=int, default=DedupConfig.k)
    parser.add_argument("--nprobe", type=int, default=DedupConfig.nprobe)
    parser.add_argument("--rows-per-list", type=int, default=DedupConfig.rows_per_list)
    parser.add_argument(
        "--threads", type=int, default=None, help="OpenMP/BLAS threads of the measured process"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        cfg = DedupConfig(**json.loads(args.config))
        print(json.dumps(measure(args.rows, args.child, args.exact, cfg)))
        return
    cfg = DedupConfig(k=args.k, nprobe=args.nprobe, rows_per_list=args.rows_per_list)
    record = {"conditions": conditions(), "config": asdict(cfg), "results": []}
    record["conditions"]["threads"] = args.threads or record["conditions"]["faiss_threads"]
    record["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"# {record['conditions']}")
    header = "| variant | rows | search | wall s | CPU s | load | peak RSS GiB | planted recall |"
    print(header + " survivors (expected) | vs exact |")
    print("|---" * 10 + "|")
    for variant in args.variants.split(","):
        res = run_child(args.rows, variant, args.exact, cfg, args.threads)
        record["results"].append(res)
        versus = ""
        if "exact_seconds" in res:
            versus = (
                f"exact: {res['exact_seconds']} s wall, {res['exact_cpu_seconds']} s CPU, "
                f"planted recall {res['exact_planted_recall']}; "
            )
        if "nn_distance_match" in res:
            versus += f"NN match {res['nn_distance_match']} on {res['exact_rows_compared']} rows"
            if "same_survivors_as_exact" in res:
                versus += f", same survivors: {res['same_survivors_as_exact']}"
            if "edge_recall_vs_exact" in res:
                versus += f", edge recall {res['edge_recall_vs_exact']}"
        print(
            f"| {variant} | {res['rows']} | {res['index']} | {res['seconds']} | "
            f"{res['cpu_seconds']} | {res['load_avg_1m_after']} | "
            f"{res['peak_rss_gib']} | {res['planted_recall']} | "
            f"{res['survivors']} ({res['expected_survivors']}) | {versus} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
