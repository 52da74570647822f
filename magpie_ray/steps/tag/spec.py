"""What a tagger is to the tag step: its output columns and how it runs. A leaf module.

A model tagger is a Ray Data actor class constructed as `actor(config=<its config dataclass>,
seed=<run seed>)`, where the config is `Config.<name>` (its own config group); a model-free
tagger is a plain batch function. Either takes a pyarrow batch and returns it with its columns
set (`columns.set_columns`). The registry (`registry.py`) lists every tagger once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Tagger:
    name: str  # a model tagger's config key (`Config.<name>`) and pool name
    columns: dict[str, pa.DataType]
    actor: type | None = None  # model taggers: the Ray Data actor class
    function: Callable | None = None  # model-free taggers: the batch function
    concurrency: int = 1  # calls in flight per actor: > 1 keeps an engine fed while one parses
    needs_chat_template: bool = False  # it renders conversations with its tokenizer's template
    label_columns: tuple[str, ...] = ()  # categorical tags the run summary counts
    model_column: str | None = None  # the column that records the model's name
