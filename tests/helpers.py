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
