"""Checks of a model family against a tokenizer, before any model loads.

`validate_against_tokenizer` compares every pre-query, system prompt and follow-up text of a
family with the tokenizer's own chat template (rendered with today's date where the template
dates a turn), checks BOS handling under `add_special_tokens=False`, and checks that stop
strings which are special tokens have their ids in the family. A deliberate difference (the
family's `pre_query_deviation`) is accepted exactly as declared, with a note; any other mismatch
raises `TemplateMismatchError` showing both strings. Pure functions of a Family and a tokenizer
(anything shaped like a Hugging Face `PreTrainedTokenizerBase`).
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from typing import Any

from .templates import (
    ASSISTANT_SENTINEL,
    FIX,
    SYSTEM_PROMPT_PLACEHOLDER,
    SYSTEM_SENTINEL,
    USER_SENTINEL,
    Family,
    TemplateError,
    TemplateMismatchError,
    fill_today,
    render_pre_query,
    render_prefix,
    special_token_id,
)


@dataclass(frozen=True)
class Checked:
    """A family that passed its checks against a tokenizer, and what to tell the user."""

    deviation: str | None = None  # the declared deviation's reason, when the template differs
    notes: tuple[str, ...] = ()


def validate_against_tokenizer(
    family: Family, tokenizer: Any, today: datetime.date | None = None
) -> Checked:
    """Raise `TemplateError` unless `family` produces the input `tokenizer`'s model expects.

    Checks (a) every pre-query and the follow-up text against the chat template's own rendering,
    when the tokenizer has one (dated turns rendered for `today`, default the current date);
    (b) BOS handling of every pre-query under `add_special_tokens=False`; (c) that stop strings
    which are special tokens have their ids in the family's `stop_token_ids` (when it lists any).
    """
    today = today or datetime.date.today()
    pre_queries = {"pre-query": render_pre_query(family, today=today)}
    for key in family.system_prompts:
        pre_queries[f"system prompt {key!r}"] = render_pre_query(family, key, today)

    notes: list[str] = []
    if getattr(tokenizer, "chat_template", None):
        notes += _check_chat_template(family, tokenizer, today)
    deviates = bool(notes) and family.pre_query_deviation is not None
    for what, text in pre_queries.items():
        _check_bos(family, tokenizer, what, text)
    if family.stop_token_ids:
        for text in family.stop_strings:
            token_id = special_token_id(tokenizer, text)
            if token_id is not None and token_id not in family.stop_token_ids:
                raise TemplateError(
                    f"family {family.name!r}: stop string {text!r} is token id {token_id} in this"
                    f" tokenizer, but the family's stop_token_ids are"
                    f" {list(family.stop_token_ids)}; the ids belong to another tokenizer. {FIX}"
                )
    return Checked(family.pre_query_deviation.reason if deviates else None, tuple(notes))


def _same_model_input(tokenizer: Any, ours: str, theirs: str) -> bool:
    if ours == theirs:
        return True
    # e.g. legacy SentencePiece encodes "<s> [INST] " and "<s>[INST] " identically.
    encode = functools.partial(tokenizer.encode, add_special_tokens=False)
    return encode(ours) == encode(theirs)


def _mismatch(
    family: Family, what: str, ours: str, theirs: str, declared: str | None = None
) -> TemplateMismatchError:
    deviation = (
        f"  declared deviation (pre_query_deviation.template_renders): {declared!r}\n"
        if declared is not None
        else ""
    )
    return TemplateMismatchError(
        f"family {family.name!r}: {what} does not match the tokenizer's chat template\n"
        f"  family YAML:   {ours!r}\n"
        f"  chat template: {theirs!r}\n"
        f"{deviation}{FIX}"
    )


def _check_chat_template(family: Family, tokenizer: Any, today: datetime.date) -> list[str]:
    notes = []
    user = {"role": "user", "content": USER_SENTINEL}
    theirs = render_prefix(tokenizer, [user])
    ours = render_pre_query(family, today=today)
    deviation = family.pre_query_deviation
    if not _same_model_input(tokenizer, ours, theirs):
        declared = fill_today(family, deviation.template_renders, today) if deviation else None
        if declared is None or not _same_model_input(tokenizer, declared, theirs):
            raise _mismatch(family, "pre_query_template", ours, theirs, declared)
        notes.append(
            f"family {family.name!r}: the pre-query differs from the chat template on purpose"
            f" ({deviation.reason}): sampling with {ours!r} where the template renders"
            f" {theirs!r}"
        )

    if family.system_prompt_template is not None:
        # A probe checks the system turn's shape even for a family without named prompts.
        prompts = {"system_prompt_template": SYSTEM_SENTINEL}
        prompts.update({f"system prompt {k!r}": v for k, v in family.system_prompts.items()})
        template = fill_today(family, family.system_prompt_template, today)
        for what, prompt in prompts.items():
            ours = template.replace(SYSTEM_PROMPT_PLACEHOLDER, prompt)
            try:
                theirs = render_prefix(tokenizer, [{"role": "system", "content": prompt}, user])
            except TemplateError:
                raise
            except Exception as err:  # templates reject a system role in their own ways
                raise TemplateMismatchError(
                    f"family {family.name!r}: the tokenizer's chat template cannot render a system"
                    f" turn ({err}); set system_prompt_template: null and system_prompts: {{}}."
                    f" {FIX}"
                ) from err
            if not _same_model_input(tokenizer, ours, theirs):
                raise _mismatch(family, what, ours, theirs)

    if family.follow_up_template is not None:
        conversation = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": ASSISTANT_SENTINEL},
            user,
        ]
        rendered = render_prefix(tokenizer, conversation)
        # What follows the assistant's content: its end-of-turn text, then the follow-up.
        between = rendered[rendered.index(ASSISTANT_SENTINEL) + len(ASSISTANT_SENTINEL) :]
        if not between.endswith(family.follow_up_template):
            raise _mismatch(
                family,
                "follow_up_template (text after an assistant turn, before the next user message)",
                family.follow_up_template,
                between,
            )
    return notes


def _check_bos(family: Family, tokenizer: Any, what: str, text: str) -> None:
    bos = tokenizer.bos_token_id
    if bos is None:
        return
    ids = tokenizer.encode(text, add_special_tokens=False)
    bos_text = getattr(tokenizer, "bos_token", None)
    if ids[:2] == [bos, bos]:
        raise TemplateError(
            f"family {family.name!r}: {what} {text!r} starts with two BOS tokens (id {bos});"
            f" write the BOS text once. {FIX}"
        )
    if bos_text and text.startswith(bos_text) and ids[0] != bos:
        raise TemplateError(
            f"family {family.name!r}: {what} {text!r} starts with {bos_text!r}, but the tokenizer"
            f" encodes it as {ids[:3]}..., not as the BOS token id {bos}. {FIX}"
        )
    # A tokenizer that prepends BOS by default expects it; our engines turn that off, so the
    # pre-query text itself must carry it.
    if tokenizer.encode("a")[:1] == [bos] and ids[:1] != [bos]:
        raise TemplateError(
            f"family {family.name!r}: {what} {text!r} lacks the BOS token {bos_text!r}"
            f" (id {bos}) that this tokenizer puts first; engines encode pre-queries with"
            f" add_special_tokens=False, so the text must start with it. {FIX}"
        )
