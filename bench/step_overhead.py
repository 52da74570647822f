"""Where the pipeline's per-step overhead comes from: one vLLM engine, one process, no Ray.

The same `vllm.LLM` object and the long-tail workload of `throughput.py`, three ways, interleaved
`--reps` times so that the machine's drift hits all of them alike:

  a   raw engine         LLM.generate over every instruction, then over every response
  c0  our engine, rows   VLLMEngine (background step thread) + RowPool, every row at once
  cw  as Ray Data feeds  the same, rows in calls of --batch-size, --in-flight calls at a time
                         (what an engine actor of the pipeline sees, without Ray)

For each run: wall seconds, engine steps, and the CPU and wall seconds spent inside
`LLMEngine.step` (time.thread_time / perf_counter around every call), so that a slower run
says whether its steps cost more CPU (the engine's work) or waited (the GIL, the feeding).
With `--parts`, the CPU seconds of the step's parts too (vLLM's scheduler, input-batch updates,
model forward, sampler, output processing), each timed around its own calls.

    .venv/bin/python bench/step_overhead.py --reps 3 --json bench/results/step-overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import throughput  # noqa: E402

from magpie_ray.engines.vllm_engine import VLLMEngine  # noqa: E402
from magpie_ray.steps.generate.chat_model import chat_model  # noqa: E402
from magpie_ray.steps.generate.row_pool import RowPool  # noqa: E402
from magpie_ray.steps.generate.rows import batch_result, generate_row, row_context  # noqa: E402


class StepClock:
    """CPU and wall seconds inside `LLMEngine.step`, and how many calls."""

    def __init__(self, llm_engine) -> None:
        self.cpu = self.wall = 0.0
        self.steps = 0
        step = llm_engine.step

        def timed():
            wall, cpu = time.perf_counter(), time.thread_time()
            out = step()
            self.wall += time.perf_counter() - wall
            self.cpu += time.thread_time() - cpu
            self.steps += 1
            return out

        llm_engine.step = timed

    def reset(self) -> None:
        self.cpu = self.wall = 0.0
        self.steps = 0


class PartClock:
    """CPU seconds inside some of vLLM's own methods, each timed around its calls (nested parts
    count in their callers too): where a step's CPU goes, without a sampling profiler."""

    def __init__(self, llm_engine) -> None:
        core = llm_engine.engine_core.engine_core  # in-process core only
        runner = core.model_executor.driver_worker.worker.model_runner
        self.cpu: dict[str, float] = {}
        for name, owner, attr in [
            ("add_request", llm_engine, "add_request"),
            ("schedule", core.scheduler, "schedule"),
            ("update_from_output", core.scheduler, "update_from_output"),
            ("execute_model", runner, "execute_model"),
            ("  update_states", runner, "_update_states"),
            ("  prepare_inputs", runner, "_prepare_inputs"),
            ("  model forward", runner.model, "forward"),
            ("  compute_logits", runner.model, "compute_logits"),
            ("sample_tokens", runner, "sample_tokens"),
            ("  sampler", runner.sampler, "forward"),
            ("process_outputs", llm_engine.output_processor, "process_outputs"),
        ]:
            self._wrap(name, owner, attr)

    def _wrap(self, name: str, owner, attr: str) -> None:
        inner = getattr(owner, attr)
        self.cpu[name] = 0.0

        def timed(*args, **kwargs):
            cpu = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.cpu[name] += time.thread_time() - cpu

        setattr(owner, attr, timed)

    def reset(self) -> None:
        self.cpu = dict.fromkeys(self.cpu, 0.0)


def run_rows(engine, cfg, rows, batch: int | None, in_flight: int) -> int:
    """Every row through a RowPool on `engine`: at once (batch None), or in calls of `batch`
    rows with `in_flight` calls waiting at a time, as Ray Data calls an engine actor."""
    gen = chat_model(
        engine,
        throughput.templates.load_family(cfg.model.family),
        cfg.model.name,
        "vllm",
        cfg.model.max_model_len,
    )
    ctx = row_context(gen, cfg.generate, None, None)
    pool = RowPool()
    calls = [rows] if batch is None else [rows[i : i + batch] for i in range(0, len(rows), batch)]
    tokens, lock = [0], threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                if not calls:
                    return
                part = calls.pop(0)
            done = batch_result(pool.run([generate_row(ctx, row) for row in part]))
            with lock:
                tokens[0] += done.output_tokens

    threads = [threading.Thread(target=caller) for _ in range(1 if batch is None else in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.close()
    return tokens[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--parts", action="store_true", help="also time the step's parts")
    parser.add_argument(
        "--shard", default="0/1", help="I/N: run every N-th row from row I (as throughput's a2)"
    )
    parser.add_argument("--variants", default="a,c0,cw", help="which to run, comma-separated")
    parser.add_argument(
        "--start-at",
        type=float,
        help="once loaded, wait for this Unix time before the first run (two instances side "
        "by side, each over its own rows, start together: the engines then share the cores "
        "as two engine actors do)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cfg, rows = throughput.workload("longtail", args.pairs, 0, 512)
    index, count = (int(x) for x in args.shard.split("/"))
    rows = rows[index::count]
    engine = VLLMEngine(throughput.generate.settings_from(cfg).engine)
    clock = StepClock(engine.llm.llm_engine)
    parts = PartClock(engine.llm.llm_engine) if args.parts else None
    variants = {
        "a": lambda: throughput._generate_direct(
            engine.llm, throughput._llm_generate, cfg, rows, None
        )[0],
        "c0": lambda: run_rows(engine, cfg, rows, None, args.in_flight),
        "cw": lambda: run_rows(engine, cfg, rows, args.batch_size, args.in_flight),
    }
    variants = {name: variants[name] for name in args.variants.split(",")}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    for rep in range(args.reps):
        for name, run in variants.items():
            clock.reset()
            if parts is not None:
                parts.reset()
            started = time.perf_counter()
            tokens = run()
            seconds = time.perf_counter() - started
            runs[name].append(
                {
                    "tokens": tokens,
                    "seconds": seconds,
                    "steps": clock.steps,
                    "step_cpu_s": clock.cpu,
                    "step_wall_s": clock.wall,
                }
                | ({f"cpu {k.strip()}": v for k, v in parts.cpu.items()} if parts else {})
            )
            print(
                f"rep {rep} {name:<3} {tokens} tokens {seconds:6.1f} s {tokens / seconds:7.0f} "
                f"tok/s  steps {clock.steps}  in step: cpu {clock.cpu:5.1f} s "
                f"wall {clock.wall:5.1f} s ({1000 * clock.cpu / max(1, clock.steps):.1f} ms cpu "
                "per step)",
                flush=True,
            )
            if parts is not None:
                print("      " + "  ".join(f"{k.strip()} {v:.2f}" for k, v in parts.cpu.items()))
    engine.close()
    medians = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for name, rs in runs.items()
    }
    print("\nmedians")
    for name, m in medians.items():
        ratio = medians["a"]["seconds"] / m["seconds"] if "a" in medians else float("nan")
        print(
            f"{name:<3} {m['seconds']:6.1f} s  /a {ratio:.2f}  steps {m['steps']:.0f}  "
            f"step cpu {1000 * m['step_cpu_s'] / m['steps']:.1f} ms"
        )
        if parts is not None:
            print("    " + "  ".join(f"{k[4:]} {v:.2f}" for k, v in m.items() if k[:4] == "cpu "))
    if args.json:
        args.json.write_text(
            json.dumps({"pairs": args.pairs, "runs": runs, "medians": medians}, indent=2)
        )


if __name__ == "__main__":
    main()
