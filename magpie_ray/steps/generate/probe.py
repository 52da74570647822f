"""`mode=probe`: before the GPU hours, whether a model writes usable instructions, and from which
pre-query. Loads the generator alone (in this process, no Ray; the embedder for the
near-duplicate share), samples `probe.samples` instructions from every pre-query variant of its
family (`families/variants.py`: its own, the chat template's, the user turn without a system
turn), with the run's instruction sampling, banned first tokens and sanitizer, and no responses.

Per variant: the usable share (not empty, not cut at max_tokens, kept by the sanitizer, not
opening like an assistant's reply), the median length, distinct-2, the near-duplicate share
(the configured embedder; a row closer than dedup.threshold to an earlier one), the language mix
and three examples. The best variant has the largest usable share x (1 - near-duplicate share),
distinct-2 breaking ties; the override that selects it is `generate.instruction.pre_query=...`.
Writes `<run>/probe.json` and returns the report.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import time
from collections import Counter

import numpy as np

from ...diversity import distinct, ngram_hashes
from ...families.prepare import prepare_generator_family
from ...families.variants import pre_query_variants
from ...storage import RunStore
from .chat_model import chat_model
from .row_pool import RowPool
from .rows import clean_instruction, row_context, sample_instruction
from .sampling import instruction_specs

PROBE_NAME = "probe.json"
EXAMPLES = 3
# How an assistant's reply opens; an "instruction" that opens so is the model answering itself.
ASSISTANT_OPENING = re.compile(
    r"^\s*(sure\b|certainly\b|of course\b|absolutely\b|great question|i'd be (happy|glad)"
    r"|i would be (happy|glad)|i'm (happy|glad) to|hello\b|hi\b|hey\b|as an ai\b"
    r"|i am an ai\b|i'm an ai\b|thank you\b|thanks for\b|here is\b|here's\b|i'm sorry\b"
    r"|i apologi[sz]e\b|how can i (help|assist))",
    re.IGNORECASE,
)


def why_unusable(text: str, finish_reason: str, sanitized: str) -> str | None:
    """Why a sampled instruction is no use (None: it is)."""
    if not text.strip():
        return "empty"
    if finish_reason == "length":
        return "cut at max_tokens"
    if not sanitized.strip():
        return "removed by the sanitizer"
    if ASSISTANT_OPENING.match(sanitized):
        return "opens like an assistant's reply"
    return None


def near_duplicate_share(vectors: np.ndarray, threshold: float) -> float | None:
    """Rows closer than `threshold` (squared L2 of unit vectors) to an earlier row, of all."""
    n = len(vectors)
    if n == 0:
        return None
    squared = np.maximum(0.0, 2.0 - 2.0 * (vectors @ vectors.T))
    earlier = np.tril(squared < threshold, k=-1)
    return float(earlier.any(axis=1).sum() / n)


def _embed(model, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    vectors = np.asarray(model.encode(texts, batch_size=32, show_progress_bar=False), np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _summary(name: str, text: str, samples: list[dict], embedder, threshold: float) -> dict:
    from ...taggers.text_tags import detect_language

    usable = [s for s in samples if s["unusable"] is None]
    texts = [s["instruction"] for s in usable]
    ones, twos = ngram_hashes(texts)
    vectors = _embed(embedder, texts) if embedder is not None else None
    return {
        "variant": name,
        "override": f"generate.instruction.pre_query={name}",
        "pre_query": text,
        "samples": len(samples),
        "usable_share": len(usable) / len(samples) if samples else 0.0,
        "unusable": dict(Counter(s["unusable"] for s in samples if s["unusable"])),
        "median_chars": float(np.median([len(t) for t in texts])) if texts else None,
        "distinct_2": distinct([twos]) if len(twos) else None,
        "near_duplicate_share": near_duplicate_share(vectors, threshold)
        if vectors is not None
        else None,
        "languages": dict(Counter(detect_language(t) or "null" for t in texts)),
        "examples": texts[:EXAMPLES],
    }


def score(variant: dict) -> tuple[float, float]:
    near = variant["near_duplicate_share"] or 0.0
    return variant["usable_share"] * (1.0 - near), variant["distinct_2"] or 0.0


def run_probe(cfg) -> dict:
    """Probe `cfg`'s generator (paths resolved, preflight passed); writes and returns probe.json."""
    from ...engines import load_engine
    from ...engines.embedder import load_embedder
    from ...engines.tokens import load_tokenizer
    from .generation import settings_from

    os.environ.update(cfg.cluster.actor_env)  # the engine runs here as it would in an actor
    started = time.perf_counter()
    settings = settings_from(cfg)
    gen_cfg = cfg.generate
    tokenizer = load_tokenizer(settings.engine.model_path, settings.engine.trust_remote_code)
    family, _ = prepare_generator_family(cfg.model.family, cfg.template_dirs, gen_cfg, tokenizer)
    today = datetime.date.today()
    variants = pre_query_variants(family, tokenizer, today)
    engine = load_engine(settings.engine, "engine")
    pool = RowPool()
    sampled: dict[str, list[dict]] = {}
    try:
        for name in variants:
            instruction = dataclasses.replace(gen_cfg.instruction, pre_query=name)
            variant_cfg = dataclasses.replace(gen_cfg, instruction=instruction)
            generator = chat_model(
                engine, family, cfg.model.name, settings.engine.kind,
                settings.engine.max_model_len, pre_query=name,
            )  # fmt: skip
            ctx = row_context(generator, variant_cfg)
            _, prompt = generator.pre_query(None, today)
            inst = gen_cfg.instruction
            seeds = [
                {
                    "temperature": inst.temperature,
                    "top_p": inst.top_p,
                    "min_p": inst.min_p,
                    "max_tokens": inst.max_tokens,
                    "seed": cfg.seed * 1_000_003 + i,
                }
                for i in range(cfg.probe.samples)
            ]
            specs = instruction_specs(seeds, family, generator.stop_ids, variant_cfg)
            flaming = inst.flaming_tokens
            steps = [
                _indexed(i, sample_instruction(ctx, prompt, spec, ctx.banned_ids, flaming))
                for i, spec in enumerate(specs)
            ]
            done = sorted(pool.run(steps), key=lambda pair: pair[0])  # pool: finishing order
            sampled[name] = [_sample_record(ctx, inst) for _, inst in done]
    finally:
        pool.close()
        engine.close()
    from ...taggers import embed

    embedding = getattr(cfg, embed.TAGGER.name)  # the run's embedder config
    embedder = load_embedder(embedding.path, embedding.start_timeout_s)
    threshold = cfg.dedup.threshold
    report = [
        _summary(name, variants[name], samples, embedder, threshold)
        for name, samples in sampled.items()
    ]
    best = max(report, key=score)
    result = {
        "model": cfg.model.name,
        "path": cfg.model.path,
        "family": family.name,
        "samples_per_variant": cfg.probe.samples,
        "variants": report,
        "best": best["variant"],
        "best_override": best["override"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    RunStore(cfg.run_uri).write_text(PROBE_NAME, json.dumps(result, indent=2) + "\n")
    return result


def _indexed(i: int, step):
    """A row's steps whose result also says which row it was."""
    return i, (yield from step)


def _sample_record(ctx, inst) -> dict:
    sanitized, _ = clean_instruction(ctx.sanitize, inst.text)
    return {
        "instruction": sanitized.strip(),
        "unusable": why_unusable(inst.text, inst.finish_reason, sanitized),
    }


def format_probe(result: dict) -> str:
    """The probe as the console prints it: the variants side by side, then the best."""
    names = [v["variant"] for v in result["variants"]]
    rows = [
        ("pre-query", [repr(v["pre_query"]) for v in result["variants"]]),
        ("usable", [f"{100 * v['usable_share']:.0f}%" for v in result["variants"]]),
        ("median chars", [_num(v["median_chars"]) for v in result["variants"]]),
        ("distinct-2", [_num(v["distinct_2"], 3) for v in result["variants"]]),
        ("near-duplicates", [_pct(v["near_duplicate_share"]) for v in result["variants"]]),
        ("languages", [_mix(v["languages"]) for v in result["variants"]]),
        ("unusable", [_mix(v["unusable"]) or "-" for v in result["variants"]]),
    ]
    lines = [
        f"probe: {result['model']} (family {result['family']}),"
        f" {result['samples_per_variant']} instructions per pre-query variant"
    ]
    width = max(len(n) for n in names) if names else 0
    for label, values in rows:
        lines.append(f"{label}:")
        lines += [f"  {n:<{width}}  {v}" for n, v in zip(names, values, strict=True)]
    for v in result["variants"]:
        lines.append(f"examples ({v['variant']}):")
        lines += [f"  - {_clip(e)}" for e in v["examples"]] or ["  (none usable)"]
    lines.append(f"best: {result['best']} (override: {result['best_override']})")
    return "\n".join(lines)


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _mix(counts: dict) -> str:
    return ", ".join(f"{k}={n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _clip(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
