"""Real SmolLM2-135M-Instruct through the whole generate step on a local Ray with vLLM."""

from collections import Counter

from magpie_ray import pipeline
from magpie_ray.config import (
    ClusterConfig,
    Config,
    EngineConfig,
    GenerateConfig,
    InstructionSampling,
    ModelConfig,
    ResponseSampling,
)
from tests.helpers import read_parts, run_uuids

N = 24
# Template fragments that must never leak into an instruction.
LEAKS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|", "|>", "system\n", "assistant\n")


def test_smollm2_writes_clean_distinct_instructions(local_ray, smollm2_path, tmp_path):
    cfg = Config(
        run_name="smol",
        output_dir=str(tmp_path),
        model=ModelConfig(
            name="smollm2-135m-instruct",
            path=str(smollm2_path),
            family="smollm2",
            max_model_len=2048,
        ),
        engine=EngineConfig(kind="vllm", kv_cache_gib=1),
        cluster=ClusterConfig(cpus_per_actor=0.5),
        generate=GenerateConfig(
            num_samples=N,
            batch_size=12,
            instruction=InstructionSampling(min_p=0.05, max_tokens=128),
            response=ResponseSampling(max_tokens=64),
        ),
    )
    pipeline.run(cfg)
    kept, dropped = run_uuids(tmp_path / "smol")
    assert len(set(kept + dropped)) == len(kept + dropped) == N
    rows = read_parts(tmp_path / "smol" / "generated")
    counts = Counter(r["instruction"] for r in rows)
    good = [
        r
        for r in rows
        if r["instruction"].strip()
        and not any(leak in r["instruction"] for leak in LEAKS)
        and counts[r["instruction"]] == 1
    ]
    shown = "\n".join(repr(r["instruction"]) for r in rows)
    assert len(good) >= 0.8 * N, f"{len(good)}/{N} clean distinct instructions:\n{shown}"
    assert all(r["response"] and "<|im_end|>" not in r["response"] for r in rows)
    assert all(r["gen_input_configs"]["min_p"] == 0.05 for r in rows)
