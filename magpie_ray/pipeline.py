"""run(cfg): the Magpie data path, one step after another (DESIGN.md's figure).

    preflight   config, template family and tokenizer checked before any model loads
    generate    pre-query -> instruction -> response       (generated/)
    dedup       all embeddings -> near-duplicate clusters   (tagged/ -> deduped/)
    select      filter recipe, top-k longest last           (selected/, dropped/select/)
    export      ShareGPT / messages / DPO JSONL, Parquet    (exports/)

Each step reads what the previous one wrote and skips rows already done, so rerunning the same
command resumes a killed job.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from . import export, templates
from .config import Config, ConfigError, model_source, validate_static
from .report import RunSummary, summarize
from .steps import dedup, generate, select
from .storage import RunStore


def preflight(cfg: Config) -> None:
    """Every check that needs no model weights and no cluster; raises ConfigError."""
    validate_static(cfg)
    try:
        family = templates.load_family(cfg.model.family, cfg.template_dirs)
        templates.render_pre_query(family, cfg.generate.instruction.system_prompt)
    except templates.TemplateError as err:
        raise ConfigError(f"model.family={cfg.model.family}: {err}") from err
    if cfg.engine.kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("engine=vllm but vllm is not installed here: install it or use engine=hf")
    if model_source(cfg.model.path) == "local":
        from .engines import load_tokenizer

        tokenizer = load_tokenizer(str(cfg.model.path), cfg.model.trust_remote_code)
        try:
            templates.validate_against_tokenizer(family, tokenizer)
        except templates.TemplateError as err:
            raise ConfigError(
                f"model.family={cfg.model.family} vs {cfg.model.path}: {err}"
            ) from err


def connect(cfg: Config) -> None:
    """Join the cluster named by cluster.address (or RAY_ADDRESS), else start a local Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.cluster.address, num_cpus=cfg.cluster.num_cpus)
    if cfg.cluster.check_resources:
        check_resources(cfg, ray.cluster_resources())


def check_resources(cfg: Config, available: dict) -> None:
    cl = cfg.cluster
    need = {"CPU": cl.num_actors * cl.cpus_per_actor, "GPU": cl.num_actors * cl.gpus_per_actor}
    short = {k: (v, available.get(k, 0)) for k, v in need.items() if v > available.get(k, 0)}
    if short:
        detail = ", ".join(f"{k}: needs {n:g}, cluster has {h:g}" for k, (n, h) in short.items())
        raise ConfigError(
            f"the actor pool cannot fit this cluster ({detail}); lower cluster.num_actors, "
            "cluster.cpus_per_actor or cluster.gpus_per_actor, or set "
            "cluster.check_resources=false for an autoscaling cluster"
        )


@dataclass(frozen=True)
class RunResult:
    summary: RunSummary
    generate: generate.StepStats | None
    dedup: dedup.DedupStats | None = None
    select: select.SelectStats | None = None
    export: export.ExportStats | None = None


def run(cfg: Config, config_yaml: str = "") -> RunResult:
    preflight(cfg)
    store = RunStore(cfg.run_uri)
    if config_yaml:
        store.write_text("config.yaml", config_yaml)
    connect(cfg)
    steps = set(cfg.steps)
    gen_stats = generate.run_step(cfg, store) if "generate" in steps else None
    dedup_stats = dedup.run_step(cfg, store) if "dedup" in steps else None
    select_stats = select.run_step(cfg, store) if "select" in steps else None
    export_stats = export.run_step(cfg, store) if "export" in steps else None
    return RunResult(
        summary=summarize(store, cfg.examples_to_print),
        generate=gen_stats,
        dedup=dedup_stats,
        select=select_stats,
        export=export_stats,
    )
