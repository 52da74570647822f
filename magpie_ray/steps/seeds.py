"""Seed rows: one per sample, deterministic from (run name, index, base seed).

Columns written: index (int), uuid (str, uuid5 of run name + index), seed (int, per-row sampling
seed), temperature, top_p, min_p, max_tokens (instruction sampling), system_prompt_key (str or
None). No row is ever dropped here; a rerun with the same run name yields the same rows, which is
what makes resume exact.
"""

from __future__ import annotations

import hashlib
import uuid

from ..config import InstructionSampling

# Fixed namespace so that uuids are stable across machines and versions.
MAGPIE_NAMESPACE = uuid.UUID("6d61676e-6965-7261-792d-6d6167706965")


def row_uuid(run_name: str, index: int) -> str:
    return str(uuid.uuid5(MAGPIE_NAMESPACE, f"{run_name}/{index}"))


def row_seed(base_seed: int, run_name: str, index: int) -> int:
    digest = hashlib.sha256(f"{base_seed}/{run_name}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_seed_rows(
    run_name: str, base_seed: int, num_samples: int, sampling: InstructionSampling
) -> list[dict]:
    return [
        {
            "index": i,
            "uuid": row_uuid(run_name, i),
            "seed": row_seed(base_seed, run_name, i),
            "temperature": float(sampling.temperature),
            "top_p": float(sampling.top_p),
            "min_p": float(sampling.min_p),
            "max_tokens": int(sampling.max_tokens),
            "system_prompt_key": sampling.system_prompt,
        }
        for i in range(num_samples)
    ]
