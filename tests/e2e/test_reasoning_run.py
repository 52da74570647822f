"""A run whose instructions come from one model and whose answers come from a reasoning model
with Qwen3's real tokenizer and chat template (thinking on), through Ray as users run it."""

from magpie_ray import pipeline
from magpie_ray.config import ResponderConfig
from magpie_ray.report import format_summary
from tests.helpers import read_parts, run_uuids, tiny_config


def test_a_responder_with_thinking_fills_response_reasoning(
    local_ray, tiny_model_path, tiny_qwen3_path, tmp_path
):
    cfg = tiny_config(tiny_model_path, tmp_path, run_name="reason", num_samples=8, batch_size=4)
    cfg.generate.responder = ResponderConfig(
        name="tiny-qwen3",
        path=str(tiny_qwen3_path),
        family="qwen3",
        max_model_len=512,
        kv_cache_gib=0.25,
    )
    cfg.generate.response.thinking = "on"
    cfg.generate.response.max_tokens = 96
    result = pipeline.run(cfg)

    kept, dropped = run_uuids(tmp_path / "reason")
    assert len(kept) + len(dropped) == 8 and len(kept) >= 6, dropped
    for row in read_parts(tmp_path / "reason" / "generated"):
        assert row["model"] == "tiny-chat"  # instructions: the generator
        assert row["gen_response_configs"]["output_generator"] == "tiny-qwen3"
        assert row["gen_response_configs"]["thinking"] == "on"
        assert row["response_reasoning"], row
        assert row["response"] and "<think>" not in row["response"], row
        assert "</think>" not in row["response"] + row["response_reasoning"]
    text = format_summary(result.summary)
    assert f"responses with reasoning: {len(kept)}" in text, text
