"""What a tagger is to the tag step: its output columns and how it runs. A leaf module.

A model tagger is a Ray Data actor class constructed as `actor(config=<its config dataclass>,
seed=<run seed>)`, where the config is `Config.<name>` (its own config group); a model-free
tagger is a plain batch function, called with the keyword arguments its `options` reads from
the run's config. Either takes a pyarrow batch and returns it with its columns set
(`columns.set_columns`). The registry (`registry.py`) lists every tagger once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Tagger:
    name: str  # a model tagger's config key (`Config.<name>`) and pool name
    columns: dict[str, pa.DataType]
    actor: type | None = None  # model taggers: the Ray Data actor class
    function: Callable | None = None  # model-free taggers: the batch function
    options: Callable[[Any], dict] | None = None  # model-free: its keyword arguments from a Config
    # Its own config checks beyond path, pool and engine: (config, key) -> problems
    check: Callable[[Any, str], list[str]] | None = None
    concurrency: int = 1  # calls in flight per actor: > 1 keeps an engine fed while one parses
    needs_chat_template: bool = False  # it renders conversations with its tokenizer's template
    label_columns: tuple[str, ...] = ()  # categorical tags the run summary counts
    model_column: str | None = None  # the column that records the model's name


def generative_problems(config, key: str) -> list[str]:
    """A generative tagger's (guard, judge) reply length against its context."""
    if config.max_tokens < 1 or config.max_tokens >= config.max_model_len:
        return [f"{key}.max_tokens={config.max_tokens}: must be in [1, max_model_len)"]
    return []
