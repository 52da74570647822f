"""Generation throughput: our Ray pipeline vs the raw engine vs the reference's batch-and-wait loop.

One invocation, one machine, one engine (vLLM), one model, the same rows for every variant:

  a  raw engine       one LLM.generate over every instruction, then one over every response
  b  reference loop   batches of 128 rows, each waiting for its longest response (magpie-align)
  c  our pipeline     generate.run_step on a local Ray: engine actors, rows streaming, part files
  a2 (--scaling)      two raw engines side by side, each in a process of its own over half the
                      rows: the machine's own 2-engine scaling, the ceiling of c's 2 actors / 1
                      (CPU only: both engines would share the one GPU)

`--core process` runs every variant with vLLM's engine core in a process of its own
(VLLM_ENABLE_V1_MULTIPROCESSING=1, vLLM's default and what GPU runs use); the default `thread`
keeps it in the engine's process, this project's CPU setting (a start of about half the time).

Workloads: `longtail` (the tiny chat model with its own 512-token vocabulary, so that a decode
step's fixed cost dominates as on a GPU; per-row response lengths from a heavy-tailed
distribution, EOS ignored, so every variant produces exactly the same number of tokens) and
`smollm2` (SmolLM2-135M-Instruct with natural lengths). Throughput is output tokens (instructions
plus responses) per second of generation; engine start-up is reported separately and excluded.

    .venv/bin/python bench/throughput.py --workload longtail --pairs 2000 --scaling
    .venv/bin/python bench/throughput.py --workload longtail --vocab 0 --pairs 2000
    .venv/bin/python bench/throughput.py --workload smollm2 --pairs 64
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magpie_ray.config import (  # noqa: E402
    ClusterConfig,
    Config,
    EngineConfig,
    GenerateConfig,
    InstructionSampling,
    ModelConfig,
    ResponseSampling,
)
from magpie_ray.engines.tokens import chat_prompt_ids, encode, load_tokenizer  # noqa: E402
from magpie_ray.engines.vllm_engine import llm_kwargs, sampling_params  # noqa: E402
from magpie_ray.families import templates  # noqa: E402
from magpie_ray.steps.generate import generation as generate  # noqa: E402
from magpie_ray.steps.generate import sampling  # noqa: E402
from magpie_ray.steps.generate.seeds import make_seed_rows  # noqa: E402
from magpie_ray.storage import RunStore  # noqa: E402

CACHE = Path(os.environ.get("MAGPIE_RAY_CACHE", Path.home() / ".cache" / "magpie-ray"))
REFERENCE_BATCH = 128
KV_CACHE_GIB = 1.0
MAX_NUM_SEQS = 256


def workload(name: str, pairs: int, seed: int, vocab: int | None) -> tuple[Config, list[dict]]:
    """The config and seed rows every variant runs."""
    if name == "longtail":
        from magpie_ray.testing import build_tiny_chat_model

        smollm2 = CACHE / "models" / "smollm2-135m-instruct"
        folder = "bench-tiny-chat" + (f"-v{vocab}" if vocab else "")
        path = build_tiny_chat_model(CACHE / "test-models" / folder, smollm2, vocab_size=vocab)
        model = ModelConfig(name="tiny-chat", path=str(path), family="smollm2", max_model_len=1024)
        gen = GenerateConfig(
            num_samples=pairs,
            batch_size=128,
            instruction=InstructionSampling(max_tokens=32),
            response=ResponseSampling(max_tokens=768),
        )
    elif name == "smollm2":
        path = CACHE / "models" / "smollm2-135m-instruct"
        model = ModelConfig(path=str(path), family="smollm2", max_model_len=2048)
        gen = GenerateConfig(
            num_samples=pairs,
            batch_size=16,
            instruction=InstructionSampling(min_p=0.05, max_tokens=128),
            response=ResponseSampling(max_tokens=256),
        )
    else:
        raise SystemExit(f"unknown workload {name!r}: longtail | smollm2")
    cfg = Config(
        run_name=f"bench-{name}",
        seed=seed,
        model=model,
        engine=EngineConfig(kind="vllm", kv_cache_gib=KV_CACHE_GIB, max_num_seqs=MAX_NUM_SEQS),
        cluster=ClusterConfig(cpus_per_actor=0.5, batches_in_flight=4),
        generate=gen,
    )
    rows = make_seed_rows(cfg.run_name, seed, pairs, gen)
    if name == "longtail":
        rng = random.Random(seed)
        for row in rows:
            # Log-normal lengths, median 48 tokens, a long tail clipped at 768.
            row["response_max_tokens"] = int(min(768, max(8, rng.lognormvariate(3.87, 1.0))))
            row["ignore_eos"] = True
    return cfg, rows


def _instruction_specs(cfg, rows, family, tokenizer):
    return sampling.instruction_specs(
        rows, family, templates.stop_token_ids_for(family, tokenizer), cfg.generate
    )


def _response_specs(cfg, rows, family, tokenizer, prompts):
    stops = templates.stop_token_ids_for(family, tokenizer)
    return [
        sampling.response_spec(row, len(ids), family, stops, cfg.generate, cfg.model.max_model_len)
        for row, ids in zip(rows, prompts, strict=True)
    ]


def _llm_generate(llm, prompts, specs):
    from vllm.inputs import TokensPrompt

    outs = llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts],
        [sampling_params(s) for s in specs],
        use_tqdm=False,
    )
    return [
        (o.outputs[0].text, len(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outs
    ]


def _engine_generate(engine, prompts, specs):
    return [(c.text, c.num_output_tokens, c.finish_reason) for c in engine.generate(prompts, specs)]


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _load_direct(settings):
    """The raw engine and the function that runs it: `vllm.LLM` with the pipeline's engine
    arguments; HF: this project's HF engine, the only HF generation loop there is
    (micro-batches of `engine.hf_batch_size` waiting requests)."""
    if settings.kind == "vllm":
        from vllm import LLM

        return LLM(**llm_kwargs(settings, on_gpu=_on_gpu())), _llm_generate
    from magpie_ray.engines import load_engine

    return load_engine(settings), _engine_generate


def _close_direct(llm, settings) -> None:
    """Stop a raw engine: the HF engine's thread, or vLLM's engine core (with `--core process`
    a child process, which a spawned variant's exit would otherwise wait for forever)."""
    if settings.kind != "vllm":
        llm.close()
        return
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None:
        core.shutdown()


def _generate_direct(llm, run, cfg, rows, batch: int | None) -> tuple[int, int]:
    """Instructions, then responses, `batch` rows at a time (None: all at once): (tokens, pairs)."""
    family = templates.load_family(cfg.model.family)
    tokenizer = load_tokenizer(cfg.model.path)
    pre_query = encode(tokenizer, templates.render_pre_query(family))
    tokens = kept = 0
    for start in range(0, len(rows), batch or len(rows)):
        part = rows[start : start + (batch or len(rows))]
        inst = run(llm, [pre_query] * len(part), _instruction_specs(cfg, part, family, tokenizer))
        tokens += sum(n for _, n, _ in inst)
        ok = [
            (r, t.strip())
            for r, (t, _, reason) in zip(part, inst, strict=True)
            if reason != "length" and t.strip()
        ]
        prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": t}]) for _, t in ok]
        resp = run(
            llm, prompts, _response_specs(cfg, [r for r, _ in ok], family, tokenizer, prompts)
        )
        tokens += sum(n for _, n, _ in resp)
        kept += len(resp)
    return tokens, kept


def run_direct(cfg, rows, batch: int | None) -> dict:
    """Variants a (batch=None: everything at once) and b (batches of `batch`), in-process."""
    settings = generate.settings_from(cfg).engine
    started = time.perf_counter()
    llm, run = _load_direct(settings)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tokens, kept = _generate_direct(llm, run, cfg, rows, batch)
    seconds = time.perf_counter() - started
    _close_direct(llm, settings)
    del llm
    gc.collect()
    return {"tokens": tokens, "pairs": kept, "seconds": seconds, "load_seconds": load_seconds}


def _raw_engine_process(cfg, rows, barrier, results) -> None:
    """One of the side-by-side raw engines: load, wait for the others, generate `rows`."""
    settings = generate.settings_from(cfg).engine
    started = time.perf_counter()
    llm, run = _load_direct(settings)
    load_seconds = time.perf_counter() - started
    barrier.wait()
    began = time.time()
    tokens, kept = _generate_direct(llm, run, cfg, rows, None)
    results.put((began, time.time(), tokens, kept, load_seconds))
    _close_direct(llm, settings)


def run_raw_side_by_side(cfg, rows, engines: int) -> dict:
    """Variant a2: `engines` raw engines in processes of their own, each over every
    `engines`-th row, started together once all are loaded: the machine's own scaling, which
    the pipeline's 2 actors / 1 actor is read against (both engines compete for the same
    cores, memory and caches as the two engine actors do)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(engines), spawn.Queue()
    procs = [
        spawn.Process(target=_raw_engine_process, args=(cfg, rows[i::engines], barrier, results))
        for i in range(engines)
    ]
    for proc in procs:
        proc.start()
    done = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return {
        "tokens": sum(d[2] for d in done),
        "pairs": sum(d[3] for d in done),
        "seconds": max(d[1] for d in done) - min(d[0] for d in done),
        "load_seconds": max(d[4] for d in done),
    }


def _core_env(core: str) -> dict[str, str]:
    """Environment for vLLM's engine core in this process (thread) or its own (process).

    A process core on CPU pins its worker's OpenMP threads to the cores it finds free
    (VLLM_CPU_OMP_THREADS_BIND=auto), unaware of other engines on the machine: two engines'
    workers land on the same core. `nobind` leaves placement to the OS, as the in-process
    core does."""
    if core == "process":
        return {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def run_pipeline(cfg, rows, actors: int, core: str = "thread") -> dict:
    """Variant c: the generate step on a local Ray, exactly as `python -m magpie_ray` runs it."""
    import ray

    gpu = _on_gpu()
    cfg = replace(
        cfg,
        cluster=replace(
            cfg.cluster,
            num_actors=actors,
            gpus_per_actor=1 if gpu else 0,
            actor_env={"OMP_NUM_THREADS": "1"} | _core_env(core),
        ),
    )
    with tempfile.TemporaryDirectory(prefix="magpie-bench-") as out:
        cfg = replace(cfg, output_dir=out)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            stats = generate.run_step(cfg, RunStore(cfg.run_uri), seeds=rows)
        finally:
            ray.shutdown()
    seconds = stats.generation_seconds
    return {
        "tokens": stats.output_tokens,
        "pairs": stats.rows_kept,
        "seconds": seconds,
        "load_seconds": stats.engine_load_seconds,
        "wall_seconds": stats.wall_seconds,
        "engine_busy_fraction": stats.engine_busy_fraction,
        "engine_steps": stats.engine_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", default="longtail", choices=["longtail", "smollm2"])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument(
        "--vocab",
        type=int,
        default=512,
        help="longtail: the tiny model's own vocabulary size; 0 = SmolLM2's 49,152 tokens "
        "(then a CPU step costs in proportion to its rows, unlike a GPU's; see RESULTS.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    parser.add_argument(
        "--variants", default="abc", help="which of a, b, c to run (e.g. ab where Ray is missing)"
    )
    parser.add_argument("--batch-size", type=int, help="rows per pipeline batch (c only)")
    parser.add_argument("--in-flight", type=int, default=4, help="batches per actor (c only)")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also run c with 2 actors, and a2: two raw engines side by side (the machine's "
        "own 2-engine scaling, for reading c's 2 actors / 1 actor)",
    )
    parser.add_argument(
        "--core",
        default="thread",
        choices=["thread", "process"],
        help="where vLLM's engine core runs, for every variant: in the engine's process "
        "(thread, this project's CPU setting) or a process of its own (vLLM's default, GPUs)",
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    # Read by vLLM when an engine is built; no variant has imported vLLM yet.
    os.environ.update(_core_env(args.core))

    cfg, rows = workload(args.workload, args.pairs, args.seed, args.vocab or None)
    cfg = replace(
        cfg,
        cluster=replace(cfg.cluster, batches_in_flight=args.in_flight),
        generate=replace(cfg.generate, batch_size=args.batch_size or cfg.generate.batch_size),
    )
    cfg = replace(cfg, engine=replace(cfg.engine, kind=args.engine))
    results = {}
    if "a" in args.variants:
        results["a_raw_engine"] = run_direct(cfg, rows, batch=None)
        if args.scaling and args.engine == "vllm" and not _on_gpu():  # two engines, one device
            results["a2_raw_engines_x2"] = run_raw_side_by_side(cfg, rows, engines=2)
    if "b" in args.variants:
        results["b_reference_loop"] = run_direct(cfg, rows, batch=REFERENCE_BATCH)
    if "c" in args.variants:
        results["c_pipeline_1_actor"] = run_pipeline(cfg, rows, actors=1, core=args.core)
        if args.scaling:
            results["c_pipeline_2_actors"] = run_pipeline(cfg, rows, actors=2, core=args.core)
    for r in results.values():
        r["tok_per_s"] = r["tokens"] / r["seconds"]
    rate = {name: r["tok_per_s"] for name, r in results.items()}
    pairs = [
        ("c/a", "c_pipeline_1_actor", "a_raw_engine"),
        ("c/b", "c_pipeline_1_actor", "b_reference_loop"),
        ("a/b", "a_raw_engine", "b_reference_loop"),
        ("2 actors / 1 actor", "c_pipeline_2_actors", "c_pipeline_1_actor"),
        ("raw: 2 engines / 1", "a2_raw_engines_x2", "a_raw_engine"),
    ]
    ratios = {name: rate[x] / rate[y] for name, x, y in pairs if x in rate and y in rate}

    print(
        f"\nworkload={args.workload} vocab={args.vocab or 'smollm2'} pairs={args.pairs} "
        f"machine={platform.machine()} "
        f"cpus={os.cpu_count()} engine={args.engine} max_num_seqs={MAX_NUM_SEQS} gpu={_on_gpu()} "
        f"pipeline batch_size={cfg.generate.batch_size} in_flight={args.in_flight} "
        f"core={args.core}"
    )
    print(f"{'variant':<22}{'pairs':>7}{'out tokens':>12}{'gen s':>9}{'tok/s':>9}{'start s':>9}")
    for name, r in results.items():
        print(
            f"{name:<22}{r['pairs']:>7}{r['tokens']:>12}{r['seconds']:>9.1f}"
            f"{r['tok_per_s']:>9.1f}{r['load_seconds']:>9.1f}"
        )
    for name, value in ratios.items():
        print(f"{name:<22}{value:>7.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "workload": args.workload,
                    "engine": args.engine,
                    "gpu": _on_gpu(),
                    "vocab": (args.vocab or None) if args.workload == "longtail" else None,
                    "pairs": args.pairs,
                    "batch_size": cfg.generate.batch_size,
                    "in_flight": args.in_flight,
                    "core": args.core,
                    "results": results,
                    "ratios": ratios,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
