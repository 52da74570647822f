"""The family of a tokenizer, found rather than asked for: every shipped family (and those in
`template_dirs`) is checked against the tokenizer's own chat template, as preflight checks a
named one (`checks.validate_against_tokenizer`; gpt-oss's harmony rendering with
`check_harmony_family`), before any weights load.

A family that renders exactly what the template renders wins over one that matches only through
its declared deviation (the template differs on purpose: the reference's own pre-query), so a
tokenizer whose template one family follows exactly gets that family. Families that match and
would sample alike (the same texts, stops and sampling defaults; only their names and model lists
differ) are one answer. No match, or matches that would sample differently, raise one
`TemplateError` that lists what was tried and what matched. Pure: a tokenizer and family files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checks import validate_against_tokenizer
from .templates import Family, TemplateError, list_families, load_family


def _signature(family: Family) -> Family:
    """What sampling with `family` depends on: the family without its name and model list."""
    return dataclasses.replace(family, name="", models=())


def _matches(family: Family, tokenizer: Any) -> bool | None:
    """None: no match; False: an exact match; True: a match through its declared deviation."""
    if family.renderer == "harmony":
        from .prepare import check_harmony_family

        check_harmony_family(family)
        # openai-harmony renders the prompts; the HF template is compared on the turns only
        family = dataclasses.replace(family, system_prompts={}, system_prompt_template=None)
    checked = validate_against_tokenizer(family, tokenizer)
    return checked.deviation is not None


def detect_family(tokenizer: Any, template_dirs: Sequence[str | Path] = ()) -> tuple[str, str]:
    """(the family's name, a line saying how it was found) for `tokenizer`'s chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the tokenizer has no chat template, so its family cannot be found from it: set"
            f" model.family (one of {', '.join(list_families(template_dirs))})"
        )
    tried = list_families(template_dirs)
    exact, deviating = [], []
    for name in tried:
        family = load_family(name, template_dirs)
        try:
            deviates = _matches(family, tokenizer)
        except TemplateError:
            continue
        (deviating if deviates else exact).append(family)
    chosen = exact or deviating
    if not chosen:
        raise TemplateError(
            f"no model family matches this tokenizer's chat template (tried {', '.join(tried)});"
            " set model.family, or add a family for it (template_dirs; docs: Model families)"
        )
    kinds = {_signature(f) for f in chosen}
    names = [f.name for f in chosen]
    if len(kinds) > 1:
        raise TemplateError(
            f"families {', '.join(names)} all match this tokenizer's chat template but would"
            " sample differently: set model.family to the one you mean"
            f" (tried {', '.join(tried)})"
        )
    how = "exactly" if exact else "through its declared deviation"
    alike = f" (samples as {', '.join(names[1:])} would)" if len(names) > 1 else ""
    return names[0], f"model.family={names[0]}: found from the tokenizer, matching {how}{alike}"
