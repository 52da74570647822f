"""Model-free tags: instruction language and lengths.

Reads `instruction`, `response`. Writes `language` (ISO 639-1, upper case like the released
datasets: "EN", "ZH"; null for an instruction with no letters), `instruction_length` and
`response_length` (characters; token counts are the generator's `instruction_tokens` and
`response_tokens`). No row is dropped.
"""

from __future__ import annotations

from functools import cache

import pyarrow as pa

from ..columns import set_columns
from .spec import Tagger

COLUMNS = {
    "language": pa.string(),
    "instruction_length": pa.int64(),
    "response_length": pa.int64(),
}


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def detect_language(text: str) -> str | None:
    """The text's language as an upper-case ISO 639-1 code, or None when there is no text."""
    if not any(ch.isalpha() for ch in text):
        return None
    code, _ = _identifier().classify(text)
    return code.upper()


def add_text_tags(batch, language: bool = True):
    """Ray Data batch function (pyarrow): adds character lengths and (optionally) language."""
    instructions = batch.column("instruction").to_pylist()
    responses = batch.column("response").to_pylist()
    values = {
        "language": [detect_language(t) if language else None for t in instructions],
        "instruction_length": [len(text) for text in instructions],
        "response_length": [len(text) for text in responses],
    }
    return set_columns(batch, values, COLUMNS)


TAGGER = Tagger(
    name="text",
    columns=COLUMNS,
    function=add_text_tags,
    options=lambda cfg: {"language": cfg.tag.language},
    label_columns=("language",),
)
