"""The family of a tokenizer, found rather than asked for: every shipped family (and those in
`template_dirs`) is checked against the tokenizer's own chat template, as preflight checks a
named one (`checks.validate_against_tokenizer`; gpt-oss's harmony rendering with
`check_harmony_family`), before any weights load.

The response side counts too: a family that thinks must find its switch in the template (its
`template_kwargs` change the generation prompt: Qwen3's `enable_thinking`) or, when its prompt
opens the reasoning (DeepSeek-R1), a generation prompt that ends with the reasoning's start; a
family that does not think matches no template that has such a switch or opens a reasoning.

Of the families that match, the first of these kinds that has any wins: those that render the
template exactly and declare no deviation; those that render it exactly but declare a deviation
for another template of theirs (Mistral's on Llama 2's template); those that match only through
their declared deviation (Qwen2: the reference's own pre-query). So a tokenizer whose template
one family follows exactly gets that family. Families of the winning kind that would sample
alike (only their names and model lists differ) are one answer; no match, or several that would
sample differently, raise one `TemplateError` that lists what was tried and what matched. Pure:
a tokenizer and family files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checks import validate_against_tokenizer
from .templates import USER_SENTINEL, Family, TemplateError, list_families, load_family


def _signature(family: Family) -> Family:
    """What sampling with `family` depends on: the family without its name and model list."""
    return dataclasses.replace(family, name="", models=())


def _generation_prompt(tokenizer: Any, kwargs: dict) -> str:
    """What the chat template renders after a user's words, ready for the answer."""
    messages = [{"role": "user", "content": USER_SENTINEL}]
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **kwargs
    )
    return text.split(USER_SENTINEL, 1)[1]


def _thinking_fits(family: Family, tokenizer: Any, switches: list[dict]) -> bool:
    """Whether the template answers in the way the family thinks (or does not)."""
    plain = _generation_prompt(tokenizer, {})
    thinking = family.thinking
    if thinking is None:
        switched = any(_generation_prompt(tokenizer, kw) != plain for kw in switches)
        return not switched and not plain.rstrip().endswith("<think>")
    if thinking.opened_by_prompt:
        return plain.rstrip().endswith(thinking.start)
    if thinking.template_kwargs:
        kwargs = [dict(kw) for kw in thinking.template_kwargs.values()]
        return any(_generation_prompt(tokenizer, kw) != plain for kw in kwargs)
    return not plain.rstrip().endswith(thinking.start)


def _matches(family: Family, tokenizer: Any) -> bool | None:
    """False: an exact match; True: a match through its declared deviation (raises on none)."""
    if family.renderer == "harmony":
        from .prepare import check_harmony_family

        check_harmony_family(family)
        # openai-harmony renders the prompts; the HF template is compared on the turns only
        family = dataclasses.replace(family, system_prompts={}, system_prompt_template=None)
    checked = validate_against_tokenizer(family, tokenizer)
    return checked.deviation is not None


def detect_family(
    tokenizer: Any,
    template_dirs: Sequence[str | Path] = (),
    families: Sequence[Family] | None = None,
) -> tuple[str, str]:
    """(the family's name, a line saying how it was found) for `tokenizer`'s chat template;
    `families`: those to try (default: every shipped one and those in `template_dirs`)."""
    if families is None:
        families = [load_family(name, template_dirs) for name in list_families(template_dirs)]
    tried = [f.name for f in families]
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the tokenizer has no chat template, so its family cannot be found from it: set"
            f" model.family (one of {', '.join(tried)})"
        )
    switches = [
        dict(kw) for f in families if f.thinking for kw in f.thinking.template_kwargs.values()
    ]
    kinds: tuple[list, list, list] = ([], [], [])  # exact; exact, deviating elsewhere; deviating
    for family in families:
        try:
            deviates = _matches(family, tokenizer)
        except TemplateError:
            continue
        if family.renderer != "harmony" and not _thinking_fits(family, tokenizer, switches):
            continue
        kinds[2 if deviates else 1 if family.pre_query_deviation else 0].append(family)
    chosen = next((k for k in kinds if k), [])
    if not chosen:
        raise TemplateError(
            f"no model family matches this tokenizer's chat template (tried {', '.join(tried)});"
            " set model.family, or add a family for it (template_dirs; docs: Model families)"
        )
    names = [f.name for f in chosen]
    if len({_signature(f) for f in chosen}) > 1:
        matched = [f.name for kind in kinds for f in kind]
        raise TemplateError(
            f"families {', '.join(matched)} all match this tokenizer's chat template but would"
            " sample differently: set model.family to the one you mean"
            f" (tried {', '.join(tried)})"
        )
    how = "exactly" if chosen is not kinds[2] else "through its declared deviation"
    alike = f" (samples as {', '.join(names[1:])} would)" if len(names) > 1 else ""
    return names[0], f"model.family={names[0]}: found from the tokenizer, matching {how}{alike}"
