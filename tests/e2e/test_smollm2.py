"""Real SmolLM2-135M-Instruct through the whole generate step on a local Ray with vLLM: two turns
and preference samples. (Its single-turn instructions on the default conf:
tests/e2e/test_demo.py.)"""

from magpie_ray import pipeline
from magpie_ray.config import (
    ClusterConfig,
    Config,
    EngineConfig,
    GenerateConfig,
    InstructionSampling,
    ModelConfig,
    PreferenceSampling,
    ResponseSampling,
)
from tests.helpers import read_parts, run_uuids

# Template fragments that must never leak into an instruction.
LEAKS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|", "|>", "system\n", "assistant\n")


def test_smollm2_two_turns_and_three_preference_responses(local_ray, smollm2_path, tmp_path):
    n = 8
    cfg = Config(
        run_name="smol-mt",
        output_dir=str(tmp_path),
        steps=["generate"],
        model=ModelConfig(
            name="smollm2-135m-instruct",
            path=str(smollm2_path),
            family="smollm2",
            max_model_len=2048,
        ),
        engine=EngineConfig(kind="vllm", kv_cache_gib=1),
        cluster=ClusterConfig(cpus_per_actor=0.5),
        generate=GenerateConfig(
            num_samples=n,
            batch_size=8,
            num_turns=2,
            system_prompts={"default": 1.0, "math": 1.0},
            instruction=InstructionSampling(min_p=0.05, max_tokens=128, sanitize=True),
            response=ResponseSampling(max_tokens=48),
            preference=PreferenceSampling(num_responses=3),
        ),
    )
    pipeline.run(cfg)
    kept, dropped = run_uuids(tmp_path / "smol-mt")
    assert len(set(kept + dropped)) == len(kept + dropped) == n
    rows = read_parts(tmp_path / "smol-mt" / "generated")
    assert len(rows) >= 0.75 * n, dropped
    shown = "\n".join(repr(r["conversations"]) for r in rows)
    two_turns = [r for r in rows if r["num_turns"] == 2]
    assert len(two_turns) >= 0.75 * len(rows), shown
    for row in rows:
        conv = row["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * row["num_turns"]
        assert (conv[0]["value"], conv[1]["value"]) == (row["instruction"], row["response"])
        assert all(t["value"].strip() for t in conv)
        assert not any(leak in t["value"] for t in conv for leak in LEAKS[:3]), shown
        assert len(row["turn_response_finish_reasons"]) == row["num_turns"]
        assert len(row["responses"]) == 3 and all(row["responses"])
        assert len(row["responses_finish_reasons"]) == 3
        assert row["gen_response_configs"]["num_responses"] == 3
        assert row["gen_input_configs"]["num_turns"] == 2
        assert row["gen_input_configs"]["sanitizer_rules"] is not None
        assert row["gen_input_configs"]["system_prompt_key"] in (None, "math")
    assert any(r["conversations"][2]["value"] != r["instruction"] for r in two_turns), shown
    assert sum(len(set(r["responses"])) > 1 for r in rows) >= len(rows) // 2, "T=0.8 varies"
