"""run(cfg): the Magpie data path, one step after another (DESIGN.md's figure).

    preflight   config, template family and tokenizers checked before any model loads
    generate    pre-query -> instruction -> response       (generated/)
    tag         reward, guard, judge, language, lengths, embeddings, one actor pool each
                                                           (tagged/)
    dedup       all embeddings -> near-duplicate clusters   (tagged/ -> deduped/)
    select      filter recipe, top-k longest last           (selected/, dropped/select/)
    export      ShareGPT / messages / DPO JSONL, Parquet    (exports/)

Each step reads what the previous one wrote and skips rows already done, so rerunning the same
command resumes a killed job.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from . import templates
from .config import Config, ConfigError
from .export import ExportStats
from .paths import model_source, resolve_paths
from .report import RunSummary, invocation_lines, summarize
from .run_report import write_report
from .steps import dedup, export, select
from .steps.generate import rows as generate_rows
from .steps.generate import step as generate
from .steps.tag import step as tag
from .steps.tag.registry import enabled_model_taggers
from .storage import RunStore
from .validation import validate_static


def preflight(cfg: Config) -> None:
    """Every check that needs no model weights and no cluster; raises ConfigError. `cfg`'s
    model paths must be resolved (`paths.resolve_paths`)."""
    validate_static(cfg)
    if "generate" in cfg.steps:
        check_generator(cfg)
    if "tag" in cfg.steps:
        check_tagger_tokenizers(cfg)


def check_generator(cfg: Config) -> None:
    """The generator's family, engine and tokenizer (the generate step's model only)."""
    try:
        family = generate_rows.resolve_family(
            templates.load_family(cfg.model.family, cfg.template_dirs), cfg.generate
        )
    except templates.TemplateError as err:
        raise ConfigError(f"model.family={cfg.model.family}: {err}") from err
    if cfg.engine.kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("engine=vllm but vllm is not installed here: install it or use engine=hf")
    if model_source(cfg.model.path) == "local":
        from .engines.tokens import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
        try:
            templates.fit_chat_template(family, tokenizer)
            templates.validate_against_tokenizer(family, tokenizer)
        except templates.TemplateError as err:
            raise ConfigError(
                f"model.family={cfg.model.family} vs {cfg.model.path}: {err}"
            ) from err


def check_tagger_tokenizers(cfg: Config) -> None:
    """Tagging models that render chats need a chat template: checked on their tokenizers."""
    from .engines.tokens import load_tokenizer

    for tagger in enabled_model_taggers(cfg):
        model = getattr(cfg, tagger.name)
        if not tagger.needs_chat_template or model_source(model.path) != "local":
            continue
        tokenizer = load_tokenizer(model.path, model.trust_remote_code)
        if not tokenizer.chat_template:
            raise ConfigError(
                f"{tagger.name}.path={model.path}: its tokenizer has no chat template, which the"
                f" {tagger.name} pool renders conversations with; pick a chat model or add a"
                " chat_template"
            )


def connect(cfg: Config) -> None:
    """Join the cluster named by cluster.address (or RAY_ADDRESS), else start a local Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.cluster.address, num_cpus=cfg.cluster.num_cpus)
    if cfg.cluster.check_resources:
        check_resources(cfg, ray.cluster_resources())


def check_resources(cfg: Config, available: dict) -> None:
    """Each step's actor pools run at once, so each step's total must fit the cluster."""
    cl = cfg.cluster
    needs = {}
    if "generate" in cfg.steps:
        need = {"CPU": cl.num_actors * cl.cpus_per_actor, "GPU": cl.num_actors * cl.gpus_per_actor}
        need.update({name: cl.num_actors * amount for name, amount in cl.actor_resources.items()})
        needs["generate"] = (
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
        needs["tag"] = (need, f"the pools' sizes ({keys}) or tag.task_cpus")
    for step, (need, knobs) in needs.items():
        short = {k: (v, available.get(k, 0)) for k, v in need.items() if v > available.get(k, 0)}
        if short:
            detail = ", ".join(
                f"{k}: needs {n:g}, cluster has {h:g}" for k, (n, h) in short.items()
            )
            raise ConfigError(
                f"the {step} step's actor pools cannot fit this cluster ({detail}); lower "
                f"{knobs}, or set cluster.check_resources=false for an autoscaling cluster"
            )


@dataclass(frozen=True)
class RunResult:
    summary: RunSummary
    generate: generate.StepStats | None
    tag: tag.TagStats | None = None
    report_path: str | None = None
    dedup: dedup.DedupStats | None = None
    select: select.SelectStats | None = None
    export: ExportStats | None = None
    # Why the run stopped with rows missing (None: every step finished every row); the CLI
    # then exits non-zero.
    incomplete: str | None = None


def incomplete_reason(gen_stats, tag_stats) -> str | None:
    """What a row-wise step left undone after all its passes, and the rerun that finishes it."""
    if gen_stats is not None and gen_stats.rows_missing:
        return (
            f"generate: {gen_stats.rows_missing} of {gen_stats.rows_todo} rows are in no file"
            f" after {gen_stats.passes} passes (engine actors or nodes kept dying); later steps"
            " did not run. Rerun the same command: it generates only the missing rows"
            " (generate.max_passes sets the passes)"
        )
    if tag_stats is not None and tag_stats.rows_missing:
        return (
            f"tag: {tag_stats.rows_missing} of {tag_stats.rows_todo} rows are untagged after"
            f" {tag_stats.passes} passes; later steps did not run. Rerun the same command (or"
            " steps=[tag,dedup,select,export]): it tags only the missing rows"
        )
    return None


def run(cfg: Config, config_yaml: str = "") -> RunResult:
    """Preflight, then every step of `cfg.steps` in order; model paths are resolved here."""
    cfg = resolve_paths(cfg)
    preflight(cfg)
    store = RunStore(cfg.run_uri)
    if config_yaml:
        store.write_text("config.yaml", config_yaml)
    connect(cfg)
    steps = set(cfg.steps)
    gen_stats = tag_stats = dedup_stats = select_stats = export_stats = None
    if "generate" in steps:
        gen_stats = generate.run_step(cfg, store)
    incomplete = incomplete_reason(gen_stats, None)
    if "tag" in steps and incomplete is None:
        tag_stats = tag.run_step(cfg, store)
        incomplete = incomplete_reason(None, tag_stats)
    if incomplete is None:
        dedup_stats = dedup.run_step(cfg, store) if "dedup" in steps else None
        select_stats = select.run_step(cfg, store) if "select" in steps else None
        export_stats = export.run_step(cfg, store) if "export" in steps else None
    invocation = invocation_lines(gen_stats, tag_stats)
    return RunResult(
        summary=summarize(store, cfg.examples_to_print, requested=cfg.generate.num_samples),
        generate=gen_stats,
        tag=tag_stats,
        dedup=dedup_stats,
        select=select_stats,
        export=export_stats,
        report_path=write_report(store, f"magpie-ray run {cfg.run_name}", invocation, cfg.seed),
        incomplete=incomplete,
    )
