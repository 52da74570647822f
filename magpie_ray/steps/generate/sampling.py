"""How each request of a row samples: specs from the config, the family and the seed row. Pure.

The instruction samples with the row's decoding-grid cell and seed and stops at the family's
stop strings (plus a newline with `stop_at_newline`, plus `extra_stop_strings`); the response
with `generate.response`, within the context window; preference samples (n=K) with
`generate.preference`. Turn t of a row uses `turn_seed(seed, t)`.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence

from ...config import GenerateConfig
from ...engines.base import SamplingSpec
from ...families import templates


def instruction_specs(
    rows: Sequence[dict], family: templates.Family, stop_ids: Sequence[int], cfg: GenerateConfig
) -> list[SamplingSpec]:
    inst = cfg.instruction
    stops = tuple(family.stop_strings) + (("\n",) if inst.stop_at_newline else ())
    stops += tuple(t for t in inst.extra_stop_strings if t not in stops)
    return [
        SamplingSpec(
            temperature=row["temperature"],
            top_p=row["top_p"],
            min_p=row["min_p"],
            max_tokens=row["max_tokens"],
            seed=row["seed"],
            stop=stops,
            stop_token_ids=tuple(stop_ids),
        )
        for row in rows
    ]


def response_spec(
    row: dict,
    prompt_len: int,
    family: templates.Family,
    stop_ids: Sequence[int],
    cfg: GenerateConfig,
    max_model_len: int,
) -> SamplingSpec:
    """Sampling of one row's response; its budget never overruns the context window."""
    res = cfg.response
    return SamplingSpec(
        temperature=res.temperature,
        top_p=res.top_p,
        max_tokens=min(
            row.get("response_max_tokens") or res.max_tokens, max_model_len - prompt_len
        ),
        seed=row["seed"],
        repetition_penalty=res.repetition_penalty,
        stop=tuple(family.response_stops),
        stop_token_ids=tuple(stop_ids),
        ignore_eos=bool(row.get("ignore_eos")),
    )


def preference_spec(
    row: dict, response: SamplingSpec, cfg: GenerateConfig, prompt_len: int, max_model_len: int
) -> SamplingSpec:
    """K samples of the first response in one request (sample j seeded with the row seed + j)."""
    pref = cfg.preference
    return dataclasses.replace(
        response,
        n=pref.num_responses,
        temperature=pref.temperature,
        top_p=pref.top_p,
        max_tokens=min(pref.max_tokens or cfg.response.max_tokens, max_model_len - prompt_len),
        seed=row["seed"],
    )


def turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of turn `turn` (1-based) of a row; turn 1 keeps the row seed."""
    return (seed + (turn - 1) * 1_000_003) % 2**31


_BANNED_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def banned_first_token_ids(tokenizer, prefixes: Sequence[str]) -> tuple[int, ...]:
    """Ids of vocabulary entries whose text, leading spaces removed, starts with a prefix.

    "#" bans "#", "##", " ###", "#include" ...: every way to open a markdown header. Decoding the
    vocabulary takes a second or two, so the result is kept per tokenizer object.
    """
    if not prefixes:
        return ()
    cache = _BANNED_CACHE.setdefault(tokenizer, {})
    key = tuple(prefixes)
    if key not in cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cache[key] = tuple(i for i, text in enumerate(texts) if text.lstrip().startswith(key))
    return cache[key]


def banned_prefixes(family: templates.Family, cfg: GenerateConfig) -> tuple[str, ...]:
    chosen = cfg.instruction.banned_first_token_prefixes
    return tuple(family.banned_first_token_prefixes if chosen is None else chosen)


def sanitizes(family: templates.Family, cfg: GenerateConfig) -> bool:
    return family.sanitize if cfg.instruction.sanitize is None else cfg.instruction.sanitize
