"""Seed rows: one per sample, deterministic from (run name, index, base seed).

Columns written: index (int), uuid (str, uuid5 of run name + index), seed (int, per-row sampling
seed), temperature, top_p, min_p (the row's decoding-grid cell), max_tokens (instruction
sampling), system_prompt_key (str, or None for the family's default pre-query). No row is ever
dropped here; a rerun with the same run name yields the same rows, which is what makes resume
exact.

Mixtures (system prompts, grid cells) are assigned by proportion with a low-discrepancy sequence:
row i takes the option whose cumulative-weight interval holds frac(offset + i * alpha). Every
prefix of the rows then matches the weights to within a few rows, and a row's assignment depends
only on its index and the run name, never on how many rows the run has.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence

from ...config import GenerateConfig
from ...families.templates import DEFAULT_SYSTEM_PROMPT

# Fixed namespace so that uuids are stable across machines and versions.
MAGPIE_NAMESPACE = uuid.UUID("6d61676e-6965-7261-792d-6d6167706965")
# Two badly approximable irrationals, so that the domain and grid sequences are not in lockstep.
_GOLDEN = (math.sqrt(5) - 1) / 2
_SILVER = math.sqrt(2) - 1


def row_uuid(run_name: str, index: int) -> str:
    return str(uuid.uuid5(MAGPIE_NAMESPACE, f"{run_name}/{index}"))


def row_seed(base_seed: int, run_name: str, index: int) -> int:
    digest = hashlib.sha256(f"{base_seed}/{run_name}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _offset(run_name: str, purpose: str) -> float:
    digest = hashlib.sha256(f"{run_name}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def pick_by_weight(weights: Sequence[float], u: float) -> int:
    """Index of the option whose share of [0, 1) holds `u` (weights need not sum to 1)."""
    total = sum(weights)
    edge = 0.0
    for i, w in enumerate(weights):
        edge += w / total
        if u < edge:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u at 1.0 - rounding


def mixture_index(run_name: str, purpose: str, alpha: float, index: int, weights) -> int:
    """The option row `index` takes in a weighted mixture (see the module docstring)."""
    return pick_by_weight(weights, (_offset(run_name, purpose) + index * alpha) % 1.0)


def make_seed_rows(
    run_name: str, base_seed: int, num_samples: int, gen: GenerateConfig
) -> list[dict]:
    inst = gen.instruction
    cells = [(c.temperature, c.top_p, c.min_p, c.weight) for c in inst.grid] or [
        (inst.temperature, inst.top_p, inst.min_p, 1.0)
    ]
    keys = sorted(gen.system_prompts) or [DEFAULT_SYSTEM_PROMPT]
    key_weights = [gen.system_prompts.get(k, 1.0) for k in keys]
    rows = []
    for i in range(num_samples):
        temperature, top_p, min_p, _ = cells[
            mixture_index(run_name, "grid", _SILVER, i, [c[3] for c in cells])
        ]
        key = keys[mixture_index(run_name, "system_prompts", _GOLDEN, i, key_weights)]
        rows.append(
            {
                "index": i,
                "uuid": row_uuid(run_name, i),
                "seed": row_seed(base_seed, run_name, i),
                "temperature": float(temperature),
                "top_p": float(top_p),
                "min_p": float(min_p),
                "max_tokens": int(inst.max_tokens),
                "system_prompt_key": None if key == DEFAULT_SYSTEM_PROMPT else key,
            }
        )
    return rows
