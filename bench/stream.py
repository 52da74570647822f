"""The whole path with generation streaming into tagging vs one step after the other.

Runs the CLI as a user does (`python -m magpie_ray ...`, the embedded demo's models: SmolLM2
generates and judges, the stand-ins score and guard, MiniLM embeds) on the same local Ray (the
same CPUs and pool sizes), once with `tag.stream=false` (generate, then tag) and once with
`tag.stream=true` (the tag pools run on the rows as the engine pool writes them), then dedup,
select and export in both. Each repeat runs both modes, in alternating order, each on a fresh
run folder. Records the CLI's wall time (Ray start, model loads and the summary included) and
the generate / tag lines of its summary, and checks that both modes tagged every generated row.

    .venv/bin/python bench/stream.py --repeats 3 --json bench/results/stream-demo.json

The ratio sequential / streamed is what overlap buys on these resources; on this 2-core machine
every pool shares the same two cores, so it mostly measures the tag models loading and working
while the generator works (on a GPU cluster each pool has its own devices).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def uuids(directory: Path) -> list[str]:
    found = []
    for path in sorted(directory.glob("part-*.parquet")):
        found += pq.read_table(path, columns=["uuid"]).column("uuid").to_pylist()
    return found


def run_once(out: Path, stream: bool, args) -> dict:
    command = [
        sys.executable,
        "-m",
        "magpie_ray",
        f"output_dir={out}",
        "run_name=bench",
        f"tag.stream={'true' if stream else 'false'}",
        f"generate.num_samples={args.samples}",
        f"generate.instruction.max_tokens={args.instruction_tokens}",
        f"generate.response.max_tokens={args.response_tokens}",
        "examples_to_print=0",
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    generated = uuids(out / "bench" / "generated")
    tagged = uuids(out / "bench" / "tagged")
    assert sorted(generated) == sorted(tagged) and len(set(tagged)) == len(tagged), (
        f"stream={stream}: {len(generated)} generated, {len(tagged)} tagged"
    )
    return {
        "stream": stream,
        "wall_seconds": round(wall, 1),
        "rows": len(tagged),
        # the summary's generate and tag lines (and the global steps')
        "summary": re.findall(r"this invocation: (.*)$", proc.stdout, re.MULTILINE),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--instruction-tokens", type=int, default=128)
    parser.add_argument("--response-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        for repeat in range(args.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for stream in order:
                out = Path(tmp) / f"{'streamed' if stream else 'sequential'}-{repeat}"
                result = run_once(out, stream, args)
                result["repeat"] = repeat
                runs.append(result)
                print(json.dumps(result), flush=True)
    sequential = statistics.median(r["wall_seconds"] for r in runs if not r["stream"])
    streamed = statistics.median(r["wall_seconds"] for r in runs if r["stream"])
    summary = {
        "command": " ".join(["bench/stream.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "samples": args.samples,
        "median_wall_seconds": {"sequential": sequential, "streamed": streamed},
        "sequential_over_streamed": round(sequential / streamed, 3),
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
