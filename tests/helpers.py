"""Helpers for tests: build configs for the tiny model without Hydra, read a run's files."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from magpie_ray.config import (
    ClusterConfig,
    Config,
    EngineConfig,
    GenerateConfig,
    InstructionSampling,
    ModelConfig,
    ResponseSampling,
)


def tiny_config(model_path: Path, output_dir: Path, *, engine: str = "vllm", **overrides) -> Config:
    """A config for the tiny model: short outputs, small batches, one CPU actor."""
    num_samples = overrides.pop("num_samples", 12)
    batch_size = overrides.pop("batch_size", 4)
    cfg = Config(
        run_name=overrides.pop("run_name", "tiny"),
        steps=overrides.pop("steps", ["generate"]),
        output_dir=str(output_dir),
        model=ModelConfig(
            name="tiny-chat", path=str(model_path), family="smollm2", max_model_len=512
        ),
        engine=EngineConfig(kind=engine, kv_cache_gib=0.25, hf_batch_size=8),
        cluster=ClusterConfig(num_actors=overrides.pop("num_actors", 1), cpus_per_actor=0.5),
        generate=GenerateConfig(
            num_samples=num_samples,
            batch_size=batch_size,
            instruction=InstructionSampling(max_tokens=32),
            response=ResponseSampling(max_tokens=48),
        ),
    )
    assert not overrides, f"unknown overrides {overrides}"
    return cfg


def read_parts(directory: Path) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(Path(directory).glob("part-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def run_uuids(run_dir: Path) -> tuple[list[str], list[str]]:
    """(kept uuids, dropped uuids) as written, duplicates included."""
    kept = [r["uuid"] for r in read_parts(run_dir / "generated")]
    dropped = [r["uuid"] for r in read_parts(run_dir / "dropped" / "generate")]
    return kept, dropped


def tagged_rows(vectors, *, seed: int = 0) -> list[dict]:
    """Rows shaped like the tag step's output (REFERENCE.md tag names), one per vector.

    Tags vary with the row number so filters have something to choose; every 7th row has
    null tags (a failed judge parse), every 5th row a preference pair, every 11th no embedding.
    """
    qualities = ["very poor", "poor", "average", "good", "excellent"]
    difficulties = ["very easy", "easy", "medium", "hard", "very hard"]
    rows = []
    for i, vector in enumerate(vectors):
        instruction, response = f"Question {i} (seed {seed})?", "Answer. " * (i % 13 + 1)
        failed = i % 7 == 6
        row = {
            "uuid": f"u-{seed}-{i:05d}",
            "model": "tiny-chat",
            "instruction": instruction,
            "response": response,
            "conversations": [
                {"from": "human", "value": instruction},
                {"from": "gpt", "value": response},
            ],
            "response_finish_reason": "length" if i % 17 == 16 else "stop",
            "index": i,
            "task_category": None if failed else "Information seeking",
            "difficulty": None if failed else difficulties[i % 5],
            "input_quality": None if failed else qualities[(i * 3) % 5],
            "llama_guard_2": "safe",
            "safety": "safe",
            "instruct_reward": None if failed else float(i % 9 - 6),
            "reward_difference": None if failed else float(i % 4 - 1),
            "instruction_length": len(instruction),
            "response_length": len(response),
            "language": "EN",
            "embedding": None if i % 11 == 10 else [float(v) for v in vector],
            "chosen": None,
            "rejected": None,
        }
        if i % 5 == 0:
            row["chosen"] = [
                {"role": "user", "content": instruction},
                {"role": "assistant", "content": response},
            ]
            row["rejected"] = [
                {"role": "user", "content": instruction},
                {"role": "assistant", "content": "No."},
            ]
        rows.append(row)
    return rows


def tagged_table(rows: list[dict]):
    import pyarrow as pa

    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema(
        [
            ("uuid", pa.string()),
            ("model", pa.string()),
            ("instruction", pa.string()),
            ("response", pa.string()),
            ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
            ("response_finish_reason", pa.string()),
            ("index", pa.int64()),
            ("task_category", pa.string()),
            ("difficulty", pa.string()),
            ("input_quality", pa.string()),
            ("llama_guard_2", pa.string()),
            ("safety", pa.string()),
            ("instruct_reward", pa.float64()),
            ("reward_difference", pa.float64()),
            ("instruction_length", pa.int64()),
            ("response_length", pa.int64()),
            ("language", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            ("chosen", message),
            ("rejected", message),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)
