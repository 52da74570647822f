"""The generate step's row logic on real engines (no Ray): schema, drops, determinism."""

import pyarrow as pa
import pytest

from magpie_ray.config import GenerateConfig, InstructionSampling, ResponseSampling
from magpie_ray.families.templates import load_family
from magpie_ray.steps.generate.row_pool import generate_rows
from magpie_ray.steps.generate.schema import GENERATED_SCHEMA
from magpie_ray.steps.generate.seeds import make_seed_rows

SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def _cfg(inst_tokens=32, resp_tokens=48, stop_at_newline=True):
    return GenerateConfig(
        num_samples=8,
        batch_size=8,
        instruction=InstructionSampling(max_tokens=inst_tokens, stop_at_newline=stop_at_newline),
        response=ResponseSampling(max_tokens=resp_tokens),
    )


@pytest.mark.parametrize("kind", ["vllm", "hf"])
def test_rows_follow_the_released_schema(engines, kind):
    cfg = _cfg()
    seeds = make_seed_rows("gen", 0, 8, cfg)
    result = generate_rows(engines[kind], load_family("smollm2"), seeds, cfg, "tiny", kind, 512)
    assert len(result.kept) + len(result.dropped) == 8
    assert len(result.kept) >= 6, result.dropped
    table = pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)  # raises on a bad field
    assert table.num_rows == len(result.kept)
    for row in result.kept:
        assert row["instruction"] and row["response"]
        assert not any(tok in row["instruction"] + row["response"] for tok in SPECIAL)
        assert row["conversations"] == [
            {"from": "human", "value": row["instruction"]},
            {"from": "gpt", "value": row["response"]},
        ]
        assert row["gen_input_configs"]["pre_query_template"].endswith("<|im_start|>user\n")
        assert row["gen_input_configs"]["seed"] == seeds[row["index"]]["seed"]
        assert row["instruction_finish_reason"] == "stop"
        assert row["response_finish_reason"] in ("stop", "length")
        assert 0 < row["instruction_tokens"] <= 32 and 0 < row["response_tokens"] <= 48
        assert row["gen_response_configs"]["engine"] == kind
    assert result.output_tokens >= sum(
        r["instruction_tokens"] + r["response_tokens"] for r in result.kept
    )


def test_truncated_instructions_are_dropped_with_their_reason(engines):
    cfg = _cfg(inst_tokens=2)
    seeds = make_seed_rows("trunc", 0, 6, cfg)
    result = generate_rows(engines["vllm"], load_family("smollm2"), seeds, cfg, "tiny", "vllm", 512)
    assert result.kept == []
    assert sorted(d["uuid"] for d in result.dropped) == sorted(r["uuid"] for r in seeds)
    assert {d["reason"] for d in result.dropped} == {"instruction_truncated"}


def test_responses_that_cannot_fit_the_context_are_dropped(engines):
    cfg = _cfg()
    seeds = make_seed_rows("ctx", 0, 4, cfg)
    # A 30-token window holds the pre-query (22 tokens) but no chat prompt with its system turn.
    result = generate_rows(engines["vllm"], load_family("smollm2"), seeds, cfg, "tiny", "vllm", 30)
    reasons = {d["reason"] for d in result.dropped}
    assert reasons <= {"prompt_too_long", "instruction_truncated"} and "prompt_too_long" in reasons
    assert result.kept == []


def test_same_seeds_same_rows(engines):
    cfg = _cfg()
    seeds = make_seed_rows("det", 0, 6, cfg)
    family = load_family("smollm2")
    first = generate_rows(engines["vllm"], family, seeds, cfg, "tiny", "vllm", 512)
    # Another batch composition: reversed order, half the rows.
    second = generate_rows(engines["vllm"], family, seeds[::-1][:3], cfg, "tiny", "vllm", 512)
    by_uuid = {r["uuid"]: r["instruction"] for r in first.kept}
    for row in second.kept:
        assert by_uuid[row["uuid"]] == row["instruction"]


def test_a_restarted_actor_never_rewrites_rows_already_in_the_run(tiny_model_path, tmp_path):
    """A call retried after an actor crash can hold rows another call already wrote (rows go
    back in the order they finish, whichever call brought them): they are skipped."""
    from magpie_ray.steps.generate.generation import GenerateActor, settings_from
    from tests.helpers import run_uuids, tiny_config

    cfg = tiny_config(tiny_model_path, tmp_path, engine="hf", run_name="retry")
    seeds = make_seed_rows(cfg.run_name, cfg.seed, 6, cfg.generate)
    first = GenerateActor(settings_from(cfg))
    assert first(pa.Table.from_pylist(seeds[:3]))["skipped"] == [0]
    first.engine.close()
    restarted = GenerateActor(settings_from(cfg))
    stats = restarted(pa.Table.from_pylist(seeds))
    restarted.engine.close()
    assert stats["skipped"] == [3] and stats["rows"] == [3]
    kept, dropped = run_uuids(tmp_path / "retry")
    assert sorted(kept + dropped) == sorted(r["uuid"] for r in seeds), "every row exactly once"
