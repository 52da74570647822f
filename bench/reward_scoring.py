"""Reward scoring: batched (our reward pool) vs one conversation at a time (the reference's way).

One invocation, one machine, one reward model, the same conversations for both variants:

  single   HFRewardScorer with micro_batch_size=1: a forward pass per conversation
  batched  HFRewardScorer with micro_batch_size=N: length-sorted micro-batches with padding
  vllm     VLLMRewardScorer (reward.engine=vllm): every conversation in one pooling call,
           batched by vLLM's scheduler (--vllm; raw logits, as the others)

Both variants score the same conversations and must agree (max |difference| is reported).
Conversations are built from real instruction/response text of varied length: the rows of a
finished run's `generated/` when --run-dir is given, else synthetic ones.

    .venv/bin/python bench/reward_scoring.py --rows 256
    .venv/bin/python bench/reward_scoring.py --model tiny --rows 512
    .venv/bin/python bench/reward_scoring.py --probe   # bare forward cost per row vs batch size

A GPU machine without the Hub: `--model random-llama3-8b` builds a reward model of FsfairX's
shape (Llama-3-8B, one logit) with random bf16 weights on the GPU, around the Llama-3 tokenizer
folder given by --tokenizer. Throughput does not depend on the weights' values, so it times what
the real model would (scores are meaningless). `random-llama3-8b:2` keeps 2 of the 32 layers.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magpie_ray.assets import build_reward_stand_in  # noqa: E402
from magpie_ray.conversations import to_messages  # noqa: E402
from magpie_ray.engines.scorers import HFRewardScorer, VLLMRewardScorer  # noqa: E402

CACHE = Path(os.environ.get("MAGPIE_RAY_CACHE", Path.home() / ".cache" / "magpie-ray"))
WORDS = (
    "the model answers each question with a short clear explanation and an example where "
    "it helps the reader understand why the result holds and how to apply it"
).split()


def synthetic_conversations(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Instruction 8-40 words, response 20-400 words (long-tailed), deterministic."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) + "?"
        length = min(400, int(rng.lognormvariate(4.0, 0.8)) + 20)
        a = " ".join(rng.choice(WORDS) for _ in range(length)) + "."
        conversations.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    return conversations


def run_conversations(run_dir: Path, n: int) -> list[list[dict[str, str]]]:
    import pyarrow.parquet as pq

    rows = []
    for path in sorted((run_dir / "generated").glob("part-*.parquet")):
        rows.extend(pq.read_table(path, columns=["conversations"]).to_pylist())
    if not rows:
        raise SystemExit(f"no generated rows under {run_dir}")
    return [to_messages(rows[i % len(rows)]["conversations"]) for i in range(n)]


def model_path(name: str, tokenizer: Path) -> Path:
    smollm2 = CACHE / "models" / "smollm2-135m-instruct"
    if name == "smollm2":
        return build_reward_stand_in(smollm2, CACHE / "models" / "smollm2-135m-reward-stand-in")
    if name == "tiny":
        from magpie_ray.testing import build_tiny_chat_model

        tiny = build_tiny_chat_model(CACHE / "test-models" / "bench-tiny-chat", smollm2)
        return build_reward_stand_in(tiny, CACHE / "test-models" / "bench-tiny-chat-rm")
    if name.startswith("random-llama3-8b"):
        layers = int(name.partition(":")[2] or 32)
        return build_random_llama3_reward(
            CACHE / "test-models" / f"random-llama3-8b-L{layers}", layers, tokenizer
        )
    return Path(name)


def build_random_llama3_reward(out_dir: Path, layers: int, tokenizer_dir: Path) -> Path:
    """FsfairX-LLaMA3-RM's shape with random weights (built on the GPU when there is one)."""
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    from magpie_ray.assets import save_model_folder

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.bfloat16)
    return save_model_folder(model, tok, out_dir)


def timed_scores(scorer: HFRewardScorer, conversations) -> tuple[list[float], float]:
    scorer.score(conversations[:2])  # warm-up: first-call allocations
    started = time.perf_counter()
    scores = scorer.score(conversations)
    return scores, time.perf_counter() - started


def forward_probe(scorer: HFRewardScorer, lengths=(200, 600), batches=(1, 4, 16)) -> dict:
    """Milliseconds per row of one bare forward pass (random ids, no padding) per batch size:
    flat when the device is already busy at batch 1 (compute-bound), falling when it idles."""
    import torch

    out = {}
    for length in lengths:
        for batch in batches:
            ids = torch.randint(10, 1000, (batch, length), device=scorer.device)
            with torch.inference_mode():
                scorer.model(input_ids=ids[:1, :16])  # warm-up
                started = time.perf_counter()
                scorer.model(input_ids=ids)
                if scorer.device == "cuda":
                    torch.cuda.synchronize()
            ms = (time.perf_counter() - started) * 1000 / batch
            out[f"L{length}-B{batch}"] = ms
            print(f"| {length} | {batch} | {ms:.1f} |", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 | tiny | a local folder")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--run-dir", type=Path, help="score this run's generated/ rows instead")
    parser.add_argument("--vllm", action="store_true", help="add the vLLM pooling variant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--probe", action="store_true", help="only time bare forward passes")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=CACHE / "tokenizers" / "llama3",
        help="tokenizer folder for --model random-llama3-8b (a Llama-3 one, with chat template)",
    )
    args = parser.parse_args()

    path = model_path(args.model, args.tokenizer)
    if args.probe:
        scorer = HFRewardScorer(str(path), args.max_length, micro_batch_size=1)
        device = "cuda" if scorer.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
        print(f"model {path.name}, {device}\n| tokens | batch | ms per row |\n|---|---|---|")
        ms = forward_probe(scorer)
        if args.json:
            record = {"model": path.name, "device": device, "ms_per_row": ms}
            args.json.write_text(json.dumps(record, indent=2) + "\n")
        return
    conversations = (
        run_conversations(args.run_dir, args.rows)
        if args.run_dir
        else synthetic_conversations(args.rows)
    )
    # One model in memory for both variants: only the micro-batch size differs.
    single = HFRewardScorer(str(path), args.max_length, micro_batch_size=1)
    batched = copy.copy(single)
    batched.micro_batch_size = args.micro_batch
    tokens = sum(
        len(single.tokenizer(single.render(c), add_special_tokens=False)["input_ids"])
        for c in conversations
    )
    variants = [("single", single, 1), ("batched", batched, args.micro_batch)]
    if args.vllm:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        scorer = VLLMRewardScorer(str(path), args.max_length, kv_cache_gib=0.5)
        variants.append(("vllm", scorer, "vLLM"))
    results = {}
    for name, scorer, _ in variants:
        scores, seconds = timed_scores(scorer, conversations)
        results[name] = {"seconds": seconds, "rows_per_s": len(conversations) / seconds}
        results[name]["scores"] = scores
    diff = {
        name: max(
            abs(a - b)
            for a, b in zip(results["single"]["scores"], results[name]["scores"], strict=True)
        )
        for name in results
    }
    ratio = {name: r["rows_per_s"] / results["single"]["rows_per_s"] for name, r in results.items()}
    device = "cuda" if batched.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"model {path.name}, {len(conversations)} conversations, {tokens} tokens, {device}")
    print("| variant | batch | s | rows/s | / single | max abs score diff vs single |")
    print("|---|---|---|---|---|---|")
    for name, _, batch in variants:
        r = results[name]
        print(
            f"| {name} | {batch} | {r['seconds']:.1f} | {r['rows_per_s']:.1f} | "
            f"{ratio[name]:.2f}x | {diff[name]:.1e} |"
        )
    if args.json:
        for r in results.values():
            del r["scores"]
        record = {
            "model": path.name,
            "rows": len(conversations),
            "tokens": tokens,
            "micro_batch": args.micro_batch,
            "max_length": args.max_length,
            "device": device,
            "machine": platform.platform(),
            "results": results,
            "ratio": ratio,
            "max_score_difference": diff,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
