"""The dataset card at a million kept rows: its wall time and the driver's peak memory, beside
the export step's on the same rows in the same process (the ratio is the claim).

Builds N synthetic tagged rows from the demo's real tagged part (`bench/scale.py`'s `build`:
own uuids, indices and instructions, the demo's responses and tags) and keeps them all: the
worst case for the card, which reads the kept rows' labels, lengths and rewards part by part.
`selected/` and `generated/` are links to `tagged/`; the dedup and select manifests are
written as those steps would (rows N, kept N). Then, in a child process (a fresh interpreter,
no Ray: neither step uses it), the export step with `export.card=false`, then `write_card`
alone, each with the driver's RSS sampled every 0.1 s; `--repeat` runs the pair that often
and the table shows each run.

    .venv/bin/python bench/card.py --rows 1000000 --repeat 3 --json bench/results/card-1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from scale import GIB, Sampler, built_run, conditions  # noqa: E402


def prepare(run_dir: Path, rows: int) -> None:
    """Everything but tagged/ that the card reads: links and the global steps' manifests."""
    sys.path.insert(0, str(REPO))
    from magpie_ray.storage import RunStore

    (run_dir / "selected").symlink_to("tagged")
    store = RunStore(str(run_dir))
    dedup = {"rows": rows, "duplicates": 0, "duplicate_clusters": 0}
    store.write_manifest(store.kept_dir("dedup"), {"made_from": {}, "stats": dedup})
    select = {"recipe": "all", "rows": rows, "kept": rows, "drops": {}}
    store.write_manifest(store.kept_dir("select"), {"made_from": {}, "stats": select})


def drive(run_dir: Path, rows: int) -> dict:
    """In the child: the export step without its card, then the card, timed and sampled."""
    sampler = Sampler()
    import dataclasses

    from magpie_ray.config import Config
    from magpie_ray.dataset_card import write_card
    from magpie_ray.steps import export
    from magpie_ray.storage import RunStore

    cfg = Config(output_dir=str(run_dir.parent), run_name=run_dir.name)
    cfg.model.license = "apache-2.0"
    cfg.generate.num_samples = rows
    cfg.export = dataclasses.replace(cfg.export, card=False)
    store = RunStore(cfg.run_uri)
    result: dict = {}
    sampler.enter("export")
    started = time.perf_counter()
    stats = export.run_step(cfg, store)
    result["export_s"] = round(time.perf_counter() - started, 1)
    result["export_files"] = stats.files
    sampler.enter("card")
    started = time.perf_counter()
    path, _ = write_card(cfg, store, "run_name: bench\n", ["bench"])
    result["card_s"] = round(time.perf_counter() - started, 1)
    result["card_bytes"] = Path(path).stat().st_size
    sampler.stop()
    result["peaks_gib"] = {p: round(v["driver"] / GIB, 3) for p, v in sampler.peaks.items()}
    result["driver_ru_maxrss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=REPO / "outputs" / "demo" / "tagged")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rows-per-part", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/magpie-card"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(drive(args.run, args.rows)))
        return

    run_dir = args.work / f"card-{args.rows}"
    built = built_run(
        args.source, args.rows, run_dir, args.rows_per_part, lambda d: prepare(d, args.rows)
    )
    record = {
        "conditions": conditions(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "build": built,
        "runs": [],
    }
    print(f"# {record['conditions']}\n# {record['build']}")
    print("| run | export s | card s | card / export | driver peak GiB: export | card |")
    print("|---|---|---|---|---|---|")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for i in range(args.repeat):
        shutil.rmtree(run_dir / "exports", ignore_errors=True)  # else the export step skips
        command = [sys.executable, __file__, "--child", "--run", str(run_dir)]
        command += ["--rows", str(args.rows)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"child failed:\n{done.stderr[-4000:]}")
        run = json.loads(done.stdout.strip().splitlines()[-1])
        record["runs"].append(run)
        ratio = run["card_s"] / max(run["export_s"], 1e-9)
        peaks = run["peaks_gib"]
        print(
            f"| {i + 1} | {run['export_s']} | {run['card_s']} | {ratio:.3f} |"
            f" {peaks.get('export')} | {peaks.get('card')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
