"""A model's family made ready for a run, before any weights load: its custom system prompts,
its thinking mode, and the check of its texts against the tokenizer's chat template (or, for
gpt-oss, against what openai-harmony renders). Preflight and the generate step both call these;
each raises `TemplateError` with the fix.
"""

from __future__ import annotations

import datetime

from ..config import GenerateConfig
from . import harmony, templates
from .checks import Checked, validate_against_tokenizer
from .templates import DEFAULT_SYSTEM_PROMPT


def thinking_mode(family: templates.Family, requested: str | None) -> str | None:
    """The mode a family answers in: `requested` if it supports it, its default when None;
    raises `TemplateError` (naming the modes it has) otherwise."""
    if family.thinking is None:
        if requested not in (None, "off"):
            raise templates.TemplateError(
                f"family {family.name!r} has no thinking modes, so generate.response.thinking="
                f"{requested} cannot work; leave it unset (or off)"
            )
        return None
    if requested is None:
        return family.thinking.default
    if str(requested) not in family.thinking.modes:
        raise templates.TemplateError(
            f"family {family.name!r} answers with thinking in {list(family.thinking.modes)},"
            f" not {requested}: set generate.response.thinking to one of them (or leave it unset"
            f" for {family.thinking.default})"
        )
    return str(requested)


def prepare_generator_family(
    name: str, template_dirs, cfg, tokenizer
) -> tuple[templates.Family, Checked]:
    """The generator's family with the run's custom prompts, checked against its tokenizer
    before any model loads; raises `TemplateError` with the fix."""
    family = resolve_family(templates.load_family(name, template_dirs), cfg)
    if cfg.responder.path is None:
        thinking_mode(family, cfg.response.thinking)
    if family.renderer == "harmony":
        return family, check_harmony_family(family)
    templates.fit_chat_template(family, tokenizer)
    return family, validate_against_tokenizer(family, tokenizer)


def prepare_responder_family(name: str, template_dirs, thinking, tokenizer) -> templates.Family:
    """The responder's family: responses are rendered by its chat template (or harmony), in a
    thinking mode it supports; raises `TemplateError` with the fix."""
    family = templates.load_family(name, template_dirs)
    thinking_mode(family, thinking)
    if family.renderer == "chat_template":
        templates.fit_chat_template(family, tokenizer)
    return family


def check_harmony_family(family: templates.Family, today: datetime.date | None = None) -> Checked:
    """A harmony family's pre-query text against what openai-harmony renders (reasoning effort
    of its default mode, `today`'s date)."""
    today = today or datetime.date.today()
    effort = family.thinking.default if family.thinking else "medium"
    for key in (None, *family.system_prompts):
        prompt = family.system_prompts[key] if key else None
        theirs = harmony.decode(harmony.pre_query_ids(effort, today, prompt))
        ours = templates.render_pre_query(family, key, today)
        if ours != theirs:
            what = f"system prompt {key!r}" if key else "pre_query_template"
            raise templates.TemplateMismatchError(
                f"family {family.name!r}: {what} does not match what openai-harmony renders\n"
                f"  family YAML: {ours!r}\n  harmony:     {theirs!r}\n{templates.FIX}"
            )
    return Checked()


def resolve_family(family: templates.Family, cfg: GenerateConfig) -> templates.Family:
    """`family` with the run's custom system prompts; raises `TemplateError` when the domain
    mixture names a prompt the family lacks, or any prompt for a family without a system turn,
    or when multi-turn is asked of a family without a follow-up template."""
    family = templates.with_system_prompts(family, cfg.custom_system_prompts)
    for key in cfg.system_prompts:
        if key != DEFAULT_SYSTEM_PROMPT:
            templates.render_pre_query(family, key)
    if cfg.num_turns > 1 and family.follow_up_template is None:
        raise templates.TemplateError(
            f"family {family.name!r} has no follow_up_template, so generate.num_turns"
            f"={cfg.num_turns} cannot work; set generate.num_turns=1 or add the template to the"
            " family's YAML"
        )
    return family
