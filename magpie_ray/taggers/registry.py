"""Every tagger, once, in pipeline order; the tag step and both reports read them from here.

Adding a tagger: its module (columns, actor or batch function, `TAGGER`), its config group
(the dataclass, `Config.<name>` and `conf/<name>/`), and one line in `TAGGERS`. The tag step,
the stream, validation, preflight, the path resolution and both reports read them from here.
"""

from __future__ import annotations

import pyarrow as pa

from ..columns import ERROR_FIELDS
from . import embed, judge, reward, safety, text_tags
from .spec import Tagger

TAGGERS: tuple[Tagger, ...] = (
    text_tags.TAGGER,
    reward.TAGGER,
    safety.TAGGER,
    judge.TAGGER,
    embed.TAGGER,
)
MODEL_TAGGERS = tuple(t for t in TAGGERS if t.actor is not None)
FUNCTION_TAGGERS = tuple(t for t in TAGGERS if t.actor is None)

# Every column the tag step adds, in the order tagged parts hold them.
TAG_FIELDS: dict[str, pa.DataType] = {
    name: kind for tagger in TAGGERS for name, kind in tagger.columns.items()
} | ERROR_FIELDS

# Categorical tags the run summary counts (models' first, then the model-free ones).
LABEL_COLUMNS = tuple(c for t in (*MODEL_TAGGERS, *FUNCTION_TAGGERS) for c in t.label_columns)
# tagger name -> the column recording its model's name
MODEL_COLUMNS = {t.name: t.model_column for t in MODEL_TAGGERS if t.model_column}


def enabled_model_taggers(cfg) -> list[Tagger]:
    """The model taggers whose config (`cfg.<name>`) is enabled, in pipeline order."""
    return [t for t in MODEL_TAGGERS if getattr(cfg, t.name).enabled]
