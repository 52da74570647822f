"""A million rows through the global steps: wall time and peak memory of the driver and workers.

Builds a synthetic run folder of N tagged rows from a real tagged part (the demo's: `make run`
writes outputs/demo/tagged/), then runs `steps=[dedup,select,export]` as the CLI does (the same
Hydra composition, `pipeline.connect` to a local Ray, each step's `run_step`, then the run summary
and report.html) in a child process, and records per phase:

  driver peak   the largest RSS of the driver process sampled every 0.1 s during the phase
                (and its ru_maxrss over the whole run)
  worker peak   the largest sum of RSS over the local Ray's worker processes (`ray::*`, e.g.
                the dedup task's worker) during the phase, and the largest single worker

Synthetic rows: the demo's rows repeated in turn, each with its own uuid (`seeds.row_uuid` of
the run name, so the rows are the run's seed rows), its own index and instruction (the
demo's + " #<index>"), an instruct_reward with noise, and a synthetic unit embedding of the
demo's dimension around 1,000 topic centres (as bench/dedup.py), one row in 100 a near copy of
the row before it (so dedup finds 1% duplicates). Responses keep the demo's texts, lengths and
finish reasons, so top-k has many ties (broken by uuid). `conversations` keeps the demo row's.
Parts of --rows-per-part rows; each window of 4 parts holds its rows' indices shuffled across
them (as the generate step's row pool writes rows in finishing order). No embedding model runs:
the tagged parts carry the embeddings, as the tag step writes them.

`--code DIR` runs the steps with the magpie_ray of another tree (e.g. an older commit unpacked
with `git archive`): driver and Ray workers import it (PYTHONPATH).

The run's `generated/` is a link to `tagged/` (the summary reads it, as in a real run).
Generate bookkeeping (`--bookkeeping`): with all N rows done, the time and memory of
`make_seed_rows` for N rows, `done_uuids`, the todo filter and `part_files`.

    .venv/bin/python bench/scale.py --rows 100000 --json bench/results/scale-100k.json
    .venv/bin/python bench/scale.py --rows 1000000 --bookkeeping --json bench/results/scale-1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
TOPICS = 1000
WINDOW_PARTS = 4
DEDUP_COLUMNS = ("min_neighbor_distance", "repeat_count", "min_similar_uuid", "is_canonical")
OUTPUTS = ("deduped", "selected", "dropped/select", "exports", "report.html")
GIB = 2**30


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(source: Path, rows: int, run_dir: Path, run_name: str, rows_per_part: int) -> dict:
    """Write `rows` synthetic tagged rows under run_dir/tagged/ (see the module docstring)."""
    sys.path.insert(0, str(REPO))
    from magpie_ray.steps.generate.seeds import row_uuid
    from magpie_ray.storage import RunStore, part_name

    started = time.perf_counter()
    files = sorted(source.glob("part-*.parquet")) if source.is_dir() else [source]
    demo = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    demo = demo.drop_columns([c for c in DEDUP_COLUMNS if c in demo.column_names])
    dim = len(next(v for v in demo.column("embedding").to_pylist() if v))
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((TOPICS, dim)).astype(np.float32))
    store = RunStore(str(run_dir))
    target = store.kept_dir("tag")
    window = rows_per_part * WINDOW_PARTS
    parts = 0
    for start in range(0, rows, window):
        index = np.arange(start, min(rows, start + window))
        noise = rng.standard_normal((len(index), dim)).astype(np.float32) * 0.07
        vectors = _unit(centres[rng.integers(0, TOPICS, len(index))] + noise)
        near = np.flatnonzero(index % 100 == 99)  # a near copy of the row before
        jitter = rng.standard_normal((len(near), dim)).astype(np.float32) * 0.005
        vectors[near] = _unit(vectors[near - 1] + jitter)
        shuffled = rng.permutation(len(index))
        for a in range(0, len(index), rows_per_part):
            at = shuffled[a : a + rows_per_part]
            part = demo.take(pa.array(index[at] % demo.num_rows))
            uuids = [row_uuid(run_name, int(i)) for i in index[at]]
            instructions = pc.binary_join_element_wise(
                part.column("instruction"), pa.array([f" #{i}" for i in index[at]]), ""
            )
            reward = pc.add(
                pc.fill_null(part.column("instruct_reward"), 0.0),
                pa.array(rng.normal(0, 1, len(at))),
            )
            flat = pa.array(vectors[at].ravel(), pa.float32())
            offsets = pa.array(np.arange(len(at) + 1, dtype=np.int32) * dim)
            columns = {
                "uuid": pa.array(uuids, pa.string()),
                "index": pa.array(index[at], pa.int64()),
                "instruction": instructions,
                "instruct_reward": reward,
                "embedding": pa.ListArray.from_arrays(offsets, flat),
            }
            for name, values in columns.items():
                at_column = part.schema.get_field_index(name)
                part = part.set_column(at_column, part.schema.field(name), values)
            store.write_part(target, part_name(int(index[at][0]), uuids), part)
            parts += 1
    (run_dir / "generated").symlink_to("tagged")  # the summary reads generated/, as in a run
    return {
        "rows": rows,
        "parts": parts,
        "rows_per_part": rows_per_part,
        "source": str(source),
        "source_rows": demo.num_rows,
        "mean_response_chars": round(pc.mean(pc.utf8_length(demo.column("response"))).as_py()),
        "embedding_dim": dim,
        "tagged_bytes": sum(f.stat().st_size for f in (run_dir / "tagged").glob("part-*")),
        "build_seconds": round(time.perf_counter() - started, 1),
    }


def built_run(source: Path, rows: int, run_dir: Path, rows_per_part: int, then=None) -> dict:
    """`build`'s record for run_dir, building it (and calling `then(run_dir)`) only when an
    earlier build did not finish (its built.json is the mark)."""
    built = run_dir / "built.json"
    if not built.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        info = build(source, rows, run_dir, run_dir.name, rows_per_part)
        if then is not None:
            then(run_dir)
        built.write_text(json.dumps(info))
    return json.loads(built.read_text())


class Sampler:
    """Peak RSS of this process and of Ray's worker processes, per named phase."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.psutil, self.interval = psutil, interval
        self.me = psutil.Process()
        self.phase = "start"
        self.peaks: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _workers(self) -> list[int]:
        """RSS of this run's Ray workers: the local Ray's processes are this one's children
        (other Ray clusters on the machine are not counted)."""
        sizes = []
        for proc in self.me.children(recursive=True):
            try:
                if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::"):
                    sizes.append(proc.memory_info().rss)
            except self.psutil.Error:
                continue
        return sizes

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                driver = self.me.memory_info().rss
                workers = self._workers()
            except self.psutil.Error:
                continue
            peak = self.peaks.setdefault(
                self.phase, {"driver": 0, "workers_sum": 0, "worker_max": 0}
            )
            peak["driver"] = max(peak["driver"], driver)
            peak["workers_sum"] = max(peak["workers_sum"], sum(workers))
            peak["worker_max"] = max(peak["worker_max"], max(workers, default=0))
            time.sleep(self.interval)

    def enter(self, phase: str) -> None:
        time.sleep(2 * self.interval)  # one sample of the phase before at least
        self.phase = phase

    def stop(self) -> None:
        time.sleep(2 * self.interval)
        self._stop.set()
        self._thread.join()


def drive(run_dir: Path, filter_name: str) -> dict:
    """In the child: the CLI's path for steps=[dedup,select,export], phase by phase."""
    sampler = Sampler()
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import magpie_ray
    from magpie_ray import pipeline
    from magpie_ray.config import register
    from magpie_ray.paths import resolve_paths
    from magpie_ray.report import summarize
    from magpie_ray.run_report import write_report
    from magpie_ray.steps import dedup, export, select
    from magpie_ray.storage import RunStore

    def report(store, cfg) -> None:  # what pipeline.run does after the steps
        summarize(store, cfg.examples_to_print, requested=cfg.generate.num_samples)
        write_report(store, f"magpie-ray run {cfg.run_name}", [], cfg.seed)

    register()
    overrides = [
        "steps=[dedup,select,export]",
        f"filter={filter_name}",
        f"output_dir={run_dir.parent}",
        f"run_name={run_dir.name}",
    ]
    with initialize_config_dir(config_dir=str(Path(magpie_ray.__file__).parents[1] / "conf")):
        cfg = resolve_paths(OmegaConf.to_object(compose("config", overrides=overrides)))
    store = RunStore(cfg.run_uri)
    result: dict = {"code": str(Path(magpie_ray.__file__).parents[1]), "overrides": overrides}
    sampler.enter("ray start")
    pipeline.connect(cfg)
    walls = {}
    steps = [
        ("dedup", lambda: dedup.run_step(cfg, store)),
        ("select", lambda: select.run_step(cfg, store)),
        ("export", lambda: export.run_step(cfg, store)),
        ("summary + report", lambda: report(store, cfg)),
    ]
    for phase, run in steps:
        sampler.enter(phase)
        started = time.perf_counter()
        stats = run()
        walls[phase] = round(time.perf_counter() - started, 1)
        if phase in ("dedup", "select", "export"):
            result[phase] = {k: v for k, v in vars(stats).items() if k != "seconds"}
    sampler.stop()
    result["wall_s"] = walls
    result["peaks_gib"] = {
        phase: {k: round(v / GIB, 3) for k, v in peak.items()}
        for phase, peak in sampler.peaks.items()
    }
    result["driver_ru_maxrss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
    )
    return result


def bookkeeping(run_dir: Path, rows: int) -> dict:
    """In the child: the generate step's bookkeeping for `rows` seed rows, all of them done."""
    import psutil

    sys.path.insert(0, str(REPO))
    from magpie_ray.config import GenerateConfig
    from magpie_ray.steps.generate.seeds import make_seed_rows
    from magpie_ray.storage import RunStore

    store = RunStore(str(run_dir))
    me = psutil.Process()
    out = {"rss_start_gib": round(me.memory_info().rss / GIB, 3)}
    for name, work in (
        ("seed rows", lambda: make_seed_rows(run_dir.name, 0, rows, GenerateConfig())),
        ("part listing", lambda: store.part_files(store.kept_dir("generate"))),
        ("done set", lambda: store.done_uuids("generate")),
    ):
        started = time.perf_counter()
        out[name] = work()
        out[f"{name} s"] = round(time.perf_counter() - started, 2)
        out[f"{name} rss after GiB"] = round(me.memory_info().rss / GIB, 3)
    started = time.perf_counter()
    todo = [r for r in out["seed rows"] if r["uuid"] not in out["done set"]]
    out["todo filter s"] = round(time.perf_counter() - started, 2)
    out["todo rows"] = len(todo)
    out["parts"] = len(out.pop("part listing"))
    out["seed rows"] = len(out["seed rows"])
    out["done set"] = len(out["done set"])
    out["ru_maxrss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    return out


def conditions() -> dict:
    load1, load5, _ = os.getloadavg()
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "load_avg_1m_5m_at_start": [round(load1, 2), round(load5, 2)],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pyarrow": pa.__version__,
    }


def _child(args: list[str], code: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    command = [sys.executable, __file__, *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"child failed ({' '.join(args)}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=REPO / "outputs" / "demo" / "tagged")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rows-per-part", type=int, default=1000)
    parser.add_argument("--filter", default="pro-3")
    parser.add_argument("--work", type=Path, default=Path("/tmp/magpie-scale"))
    parser.add_argument("--code", type=Path, default=REPO, help="tree whose magpie_ray runs")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the steps")
    parser.add_argument("--bookkeeping", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=["drive", "bookkeeping"], help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "drive":
        print(json.dumps(drive(args.run, args.filter)))
        return
    if args.child == "bookkeeping":
        print(json.dumps(bookkeeping(args.run, args.rows)))
        return

    run_dir = args.work / f"scale-{args.rows}"
    record = {
        "conditions": conditions(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "build": built_run(args.source, args.rows, run_dir, args.rows_per_part),
        "runs": [],
    }
    print(f"# {record['conditions']}\n# {record['build']}")
    for _ in range(args.repeat):
        for name in OUTPUTS:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        run = _child(
            ["--child", "drive", "--run", str(run_dir), "--filter", args.filter], args.code
        )
        record["runs"].append(run)
        print(
            "| phase | wall s | driver peak GiB | Ray workers peak GiB (sum) | largest worker GiB |"
        )
        print("|---|---|---|---|---|")
        for phase, peak in run["peaks_gib"].items():
            wall = run["wall_s"].get(phase, "-")
            print(
                f"| {phase} | {wall} | {peak['driver']} | {peak['workers_sum']} | "
                f"{peak['worker_max']} |"
            )
        print(f"driver ru_maxrss: {run['driver_ru_maxrss_gib']} GiB")
    if args.bookkeeping:
        record["bookkeeping"] = _child(
            ["--child", "bookkeeping", "--run", str(run_dir), "--rows", str(args.rows)], REPO
        )
        print(f"# generate bookkeeping: {record['bookkeeping']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
