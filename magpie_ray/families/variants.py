"""Pre-query variants of a family: the texts a model's instructions can be sampled from, which
`mode=probe` compares and `generate.instruction.pre_query` selects for a run.

    family      the family's own pre-query (the default; what preflight checks)
    template    what the tokenizer's chat template renders before a user's words, with no
                system message: its default system turn where it adds one (Qwen2.5, SmolLM2),
                the declared deviation's other side where the family deviates (Qwen2)
    no_system   the user turn alone, no system turn at all: the family's follow-up opening
                (its user turn after an answer), after the BOS text its pre-query starts with
                (where that is not the turn marker itself)

Variants that render the same text are one (the first name). gpt-oss (harmony) has only
`family`. Pure: a family, a tokenizer and a date.
"""

from __future__ import annotations

import datetime
from typing import Any

from .templates import USER_SENTINEL, Family, fill_today, render_pre_query, render_prefix

VARIANTS = ("family", "template", "no_system")


def variant_text(family: Family, tokenizer: Any, variant: str, today: datetime.date) -> str | None:
    """The pre-query text of `variant`, or None where the family or tokenizer has none."""
    if variant == "family":
        return render_pre_query(family, None, today)
    if family.renderer != "chat_template":
        return None
    if variant == "template":
        if not getattr(tokenizer, "chat_template", None):
            return None
        return render_prefix(tokenizer, [{"role": "user", "content": USER_SENTINEL}])
    if variant == "no_system":
        if family.follow_up_template is None:
            return None
        own = render_pre_query(family, None, today)
        turn = fill_today(family, family.follow_up_template)
        bos = getattr(tokenizer, "bos_token", None) or ""
        # the BOS text the conversation opens with, unless it is the turn marker itself
        # (SmolLM2's BOS is "<|im_start|>")
        start = bos if bos and own.startswith(bos) and not turn.startswith(bos) else ""
        return start + turn
    raise ValueError(f"unknown pre-query variant {variant!r}; valid: {list(VARIANTS)}")


def pre_query_variants(family: Family, tokenizer: Any, today: datetime.date) -> dict[str, str]:
    """Every variant with a text of its own, in VARIANTS order."""
    found: dict[str, str] = {}
    for variant in VARIANTS:
        text = variant_text(family, tokenizer, variant, today)
        if text is not None and text not in found.values():
            found[variant] = text
    return found
