"""Preflight: every check a run can make before any model loads, each naming the fix.

`preflight(cfg)` checks the config (`validation.py`), the generator's template family against
its tokenizer (declared deviations accepted with a note), the responder's family and thinking
mode, and the tagging models' tokenizers; `check_resources` that each step's actor pools fit the
cluster. A failed check raises `ConfigError` (the CLI exits 2); the returned `Preflight` lists
what was checked and the notes worth telling the user (`python -m magpie_ray mode=check`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

from .config import Config, ConfigError
from .engines.registry import ENGINES
from .families import templates
from .families.prepare import prepare_generator_family, prepare_responder_family
from .paths import model_source
from .taggers.registry import enabled_model_taggers
from .validation import validate_static


@dataclass
class Preflight:
    checks: list[str] = field(default_factory=list)  # what passed, one line each
    notes: list[str] = field(default_factory=list)  # worth telling the user; not errors
    failed: list[str] = field(default_factory=list)  # mode=check: what a run could not use
    family: str | None = None  # the generator's family, found from its tokenizer (unset one)


def preflight(cfg: Config) -> Preflight:
    """Every check that needs no model weights and no cluster; raises ConfigError. `cfg`'s
    model paths must be resolved (`paths.resolve_paths`)."""
    result = Preflight()
    validate_static(cfg)
    result.checks.append("config: values, paths and recipes")
    if "generate" in cfg.steps:
        check_generator(cfg, result)
        if cfg.generate.responder.path is not None:
            check_responder(cfg, result)
    if "tag" in cfg.steps:
        check_tagger_tokenizers(cfg, result)
    return result


def _tokenizer(path: str, trust_remote_code: bool):
    from .engines.tokens import load_tokenizer

    return load_tokenizer(path, trust_remote_code)


def _family_hint(tokenizer, cfg: Config) -> str:
    """Which family this tokenizer's chat template does match, when one does (detect.py)."""
    from .families.detect import detect_family

    try:
        name, how = detect_family(tokenizer, cfg.template_dirs)
    except templates.TemplateError:
        return ""
    if name == cfg.model.family:
        return ""
    return (
        f" This tokenizer's chat template matches family {name} ({how.split(': ', 1)[1]}):"
        f" set model.family={name}"
    )


def check_generator(cfg: Config, result: Preflight) -> None:
    """The generator's family, engine and tokenizer (the generate step's model only)."""
    package = ENGINES[str(cfg.engine.kind)].package
    if importlib.util.find_spec(package) is None:
        others = [k for k, i in ENGINES.items() if importlib.util.find_spec(i.package) is not None]
        raise ConfigError(
            f"engine={cfg.engine.kind} but {package} is not installed here: install it or use"
            f" engine={' or engine='.join(others)}"
        )
    local = model_source(cfg.model.path) == "local"
    tokenizer = _tokenizer(cfg.model.path, cfg.model.trust_remote_code) if local else None
    if cfg.model.family is None:
        result.family = _found_family(cfg, tokenizer, result)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, family=result.family))
    try:
        if tokenizer is None:  # a Hub id: the family alone (its tokenizer is on the cluster)
            from .families.prepare import resolve_family, thinking_mode

            family = resolve_family(
                templates.load_family(cfg.model.family, cfg.template_dirs), cfg.generate
            )
            if cfg.generate.responder.path is None:
                thinking_mode(family, cfg.generate.response.thinking)
            checked = None
        else:
            family, checked = prepare_generator_family(
                cfg.model.family, cfg.template_dirs, cfg.generate, tokenizer
            )
    except templates.TemplateError as err:
        where = f" vs {cfg.model.path}" if tokenizer is not None else ""
        hint = _family_hint(tokenizer, cfg) if tokenizer is not None else ""
        raise ConfigError(f"model.family={cfg.model.family}{where}: {err}{hint}") from err
    if checked is None:
        result.checks.append(
            f"model.family={family.name}: loads; its tokenizer ({cfg.model.path}) is checked"
            " where the model is"
        )
    else:
        deviation = " (the default pre-query: a declared deviation)" if checked.deviation else ""
        result.checks.append(
            f"model.family={family.name} vs {cfg.model.path}: pre-query, system prompts,"
            f" follow-up and stop ids match its chat template{deviation}"
        )
        result.notes.extend(checked.notes)
    _check_pre_query(cfg, family, tokenizer, result)


def _found_family(cfg: Config, tokenizer, result: Preflight) -> str:
    """model.family unset: the family that the local tokenizer's chat template matches."""
    from .families.detect import detect_family

    if tokenizer is None:
        raise ConfigError(
            f"model.family is not set and model.path={cfg.model.path} is not a local folder, so"
            " there is no tokenizer here to find it from: set model.family"
        )
    try:
        name, how = detect_family(tokenizer, cfg.template_dirs)
    except templates.TemplateError as err:
        raise ConfigError(f"model.family is not set, and for {cfg.model.path}: {err}") from err
    result.checks.append(how)
    return name


def _check_pre_query(cfg: Config, family, tokenizer, result: Preflight) -> None:
    """generate.instruction.pre_query: the variant exists for this family and tokenizer."""
    import datetime

    from .families.variants import variant_text

    variant = str(cfg.generate.instruction.pre_query)
    if variant == "family":
        return
    if tokenizer is None:
        result.notes.append(
            f"generate.instruction.pre_query={variant}: rendered where the model is (a Hub id)"
        )
        return
    text = variant_text(family, tokenizer, variant, datetime.date.today())
    if text is None:
        raise ConfigError(
            f"generate.instruction.pre_query={variant}: family {family.name} has no such"
            " pre-query (no chat template, no follow-up turn, or harmony): use family"
        )
    result.checks.append(f"generate.instruction.pre_query={variant}: {text!r}")


def check_responder(cfg: Config, result: Preflight) -> None:
    """A separate responder: its family, its thinking mode and its chat template."""
    r = cfg.generate.responder
    if model_source(r.path) != "local":
        result.checks.append(f"generate.responder.path={r.path}: checked where the model is")
        return
    try:
        family = prepare_responder_family(
            r.family,
            cfg.template_dirs,
            cfg.generate.response.thinking,
            _tokenizer(r.path, r.trust_remote_code),
        )
    except templates.TemplateError as err:
        raise ConfigError(f"generate.responder.family={r.family} vs {r.path}: {err}") from err
    result.checks.append(
        f"generate.responder.family={family.name} vs {r.path}: answers from its chat template"
    )


def check_tagger_tokenizers(cfg: Config, result: Preflight) -> None:
    """Tagging models that render chats need a chat template: checked on their tokenizers."""
    models = [
        (key, model)
        for tagger in enabled_model_taggers(cfg)
        if tagger.needs_chat_template
        for key, model, _ in getattr(cfg, tagger.name).engines(tagger.name)
    ]
    for key, model in models:
        if model_source(model.path) != "local":
            continue
        tokenizer = _tokenizer(model.path, model.trust_remote_code)
        if not tokenizer.chat_template:
            raise ConfigError(
                f"{key}.path={model.path}: its tokenizer has no chat template, which it"
                " renders conversations with; pick a chat model or add a chat_template"
            )
        result.checks.append(f"{key}.path={model.path}: has a chat template")


def check_resources(cfg: Config, available: dict) -> None:
    """Each step's actor pools run at once, so each step's total must fit the cluster (at
    `num_actors`: an autoscaling pool starts there and grows to `max_actors` with the cluster);
    with `tag.stream` generate's and tag's pools run at once, so their sum must fit."""
    cl = cfg.cluster
    needs = {}
    if "generate" in cfg.steps:
        need = {"CPU": cl.num_actors * cl.cpus_per_actor, "GPU": cl.num_actors * cl.gpus_per_actor}
        need.update({name: cl.num_actors * amount for name, amount in cl.actor_resources.items()})
        needs["generate step's"] = (
            need,
            "cluster.num_actors, cluster.cpus_per_actor, cluster.gpus_per_actor or "
            "cluster.actor_resources",
        )
    if "tag" in cfg.steps:
        pools = [(t.name, getattr(cfg, t.name).pool) for t in enabled_model_taggers(cfg)]
        need = {
            "CPU": sum(p.num_actors * p.cpus_per_actor for _, p in pools) + cfg.tag.task_cpus,
            "GPU": sum(p.num_actors * p.gpus_per_actor for _, p in pools),
        }
        keys = ", ".join(f"{name}.pool" for name, _ in pools)
        needs["tag step's"] = (need, f"the pools' sizes ({keys}) or tag.task_cpus")
    if cfg.tag.stream and {"generate step's", "tag step's"} <= needs.keys():
        # Streaming: the engine pool and the tag pools hold their actors at the same time.
        gen_need, gen_knobs = needs.pop("generate step's")
        tag_need, tag_knobs = needs.pop("tag step's")
        need = {k: gen_need.get(k, 0) + tag_need.get(k, 0) for k in gen_need.keys() | tag_need}
        needs["generate and tag steps' (streaming, tag.stream=true)"] = (
            need,
            f"{gen_knobs}, {tag_knobs}, or set tag.stream=false (one step after the other)",
        )
    for step, (need, knobs) in needs.items():
        short = {k: (v, available.get(k, 0)) for k, v in need.items() if v > available.get(k, 0)}
        if short:
            detail = ", ".join(
                f"{k}: needs {n:g}, cluster has {h:g}" for k, (n, h) in short.items()
            )
            raise ConfigError(
                f"the {step} actor pools cannot fit this cluster ({detail}); lower "
                f"{knobs}, or set cluster.check_resources=false for an autoscaling cluster"
            )
