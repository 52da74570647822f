"""Reasoning models and a separate responder on real engines (no Ray): a tiny model with
Qwen3's real tokenizer and chat template reasons between <think> markers; its reasoning goes to
`response_reasoning`, never into `response`."""

from __future__ import annotations

import pyarrow as pa
import pytest

from magpie_ray.config import GenerateConfig, InstructionSampling, ResponseSampling
from magpie_ray.engines import load_engine
from magpie_ray.engines.base import EngineSettings
from magpie_ray.families.templates import TemplateError, load_family
from magpie_ray.steps.generate.chat_model import chat_model
from magpie_ray.steps.generate.row_pool import generate_rows
from magpie_ray.steps.generate.schema import GENERATED_SCHEMA
from magpie_ray.steps.generate.seeds import make_seed_rows

MARKERS = ("<think>", "</think>")


@pytest.fixture(scope="module")
def qwen3_engine(tiny_qwen3_path):
    engine = load_engine(
        EngineSettings(
            kind="vllm", model_path=str(tiny_qwen3_path), max_model_len=512, kv_cache_gib=0.25
        )
    )
    yield engine
    engine.close()


def _cfg(thinking=None, response_tokens=96, num_turns=1):
    return GenerateConfig(
        num_samples=8,
        batch_size=8,
        num_turns=num_turns,
        instruction=InstructionSampling(max_tokens=32),
        response=ResponseSampling(max_tokens=response_tokens, thinking=thinking),
    )


def _rows(engine, cfg, run="think"):
    seeds = make_seed_rows(run, 0, 8, cfg)
    return generate_rows(engine, load_family("qwen3"), seeds, cfg, "tiny-qwen3", "vllm", 512)


def test_thinking_on_puts_the_reasoning_in_its_own_column(qwen3_engine):
    result = _rows(qwen3_engine, _cfg("on"))
    assert len(result.kept) >= 6, result.dropped
    pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)
    for row in result.kept:
        assert row["response"] and not any(m in row["response"] for m in MARKERS), row
        assert row["response_reasoning"], row  # the model always reasons first
        assert not any(m in row["response_reasoning"] for m in MARKERS)
        assert row["conversations"][1]["value"] == row["response"], "history holds the answer"
        assert row["turn_response_reasonings"] == [row["response_reasoning"]]
        assert row["gen_response_configs"]["thinking"] == "on"
    # the family's default is its model's: Qwen3 thinks
    assert _rows(qwen3_engine, _cfg(None)).kept[0]["gen_response_configs"]["thinking"] == "on"


def test_thinking_off_prefills_an_empty_block_and_answers(qwen3_engine):
    result = _rows(qwen3_engine, _cfg("off"))
    assert len(result.kept) >= 6, result.dropped
    for row in result.kept:
        assert row["response"] and not any(m in row["response"] for m in MARKERS), row
        assert not row["response_reasoning"], "no reasoning after the prefilled empty block"
        assert row["gen_response_configs"]["thinking"] == "off"


def test_unclosed_reasoning_is_kept_without_an_answer(qwen3_engine):
    result = _rows(qwen3_engine, _cfg("on", response_tokens=6))
    unclosed = [r for r in result.kept if r["response_reasoning"] and not r["response"]]
    assert unclosed, "6 tokens cannot finish any reasoning"
    for row in unclosed:
        assert row["response_finish_reason"] == "length"
    assert not [d for d in result.dropped if d["reason"] == "response_empty"]


def test_follow_up_turns_see_answers_only(qwen3_engine):
    result = _rows(qwen3_engine, _cfg("on", num_turns=2), run="think-mt")
    two = [r for r in result.kept if r["num_turns"] == 2]
    assert two, [r["multi_turn_stop_reason"] for r in result.kept]
    for row in two:
        assert len(row["turn_response_reasonings"]) == 2
        for turn in row["conversations"]:
            assert not any(m in turn["value"] for m in MARKERS), row["conversations"]


def test_a_separate_responder_answers_instructions_from_the_generator(engines, qwen3_engine):
    cfg = _cfg("on")
    responder = chat_model(
        qwen3_engine, load_family("qwen3"), "tiny-qwen3", "vllm", 512, thinking="on"
    )
    seeds = make_seed_rows("pair", 0, 8, cfg)
    result = generate_rows(
        engines["vllm"], load_family("smollm2"), seeds, cfg, "tiny-chat", "vllm", 512,
        responder=responder,
    )  # fmt: skip
    assert len(result.kept) >= 6, result.dropped
    for row in result.kept:
        assert row["model"] == row["gen_input_configs"]["input_generator"] == "tiny-chat"
        assert row["gen_input_configs"]["pre_query_template"].startswith("<|im_start|>system")
        assert row["gen_response_configs"]["output_generator"] == "tiny-qwen3"
        assert row["response_reasoning"] and "<think>" not in row["response"]


def test_a_thinking_mode_the_family_lacks_is_an_error(engines):
    with pytest.raises(TemplateError, match="no thinking modes"):
        generate_rows(engines["vllm"], load_family("smollm2"), [], _cfg("on"), "t", "vllm", 512)
    with pytest.raises(TemplateError, match=r"\['on'\], not off"):
        chat_model(engines["vllm"], load_family("deepseek-r1"), "t", "vllm", 512, "off")
