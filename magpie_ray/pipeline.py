"""run(cfg): the Magpie data path, one step after another (docs/architecture.md's figure).

    preflight   config, template family and tokenizers checked before any model loads
    generate    pre-query -> instruction -> response       (generated/)
    tag         reward, guard, judge, language, lengths, embeddings, one actor pool each
                                                           (tagged/)
                with tag.stream=true the tag pools run on generate's rows as they are
                written (steps/stream.py); the tag step then tags only what that left
    dedup       all embeddings -> near-duplicate clusters   (tagged/ -> deduped/)
    select      filter recipe, top-k longest last           (selected/, dropped/select/)
    export      ShareGPT / messages / DPO JSONL, Parquet    (exports/)

Each step reads what the previous one wrote and skips rows already done, so rerunning the same
command resumes a killed job.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from . import cluster, console, costs
from .config import Config, ConfigError
from .export_writer import ExportStats
from .paths import resolve_paths
from .preflight import Preflight, check_resources, preflight
from .report import RunSummary, invocation_lines, summarize
from .run_report import write_report
from .steps import dedup, export, select, stream
from .steps import tagging as tag
from .steps.generate import generation as generate
from .storage import RunStore, unwritable

log = logging.getLogger(__name__)


def with_found_family(cfg: Config, checked: Preflight) -> Config:
    """`cfg` with the generator's family preflight found from its tokenizer (model.family
    unset): the steps and the dataset card use it."""
    if cfg.model.family is not None or checked.family is None:
        return cfg
    log.info("model.family=%s: found from %s's chat template", checked.family, cfg.model.path)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, family=checked.family))


def check_doors(cfg: Config) -> None:
    """What a user typed that the run cannot use, before anything is written or started: a run
    folder this process cannot create or write, a cluster that does not answer (ConfigError)."""
    reason = unwritable(cfg.run_uri)
    if reason:
        raise ConfigError(
            f"output_dir={cfg.output_dir}: the run folder {cfg.run_uri} cannot be created or"
            f" written: {reason}. Fix: choose an output_dir this process can write (a local"
            " folder, or a URI such as s3://bucket/magpie)"
        )
    where = cluster.target(cfg.cluster)
    if where is not None:
        cluster.check_address(where, cfg.cluster.connect_timeout_s)


def check(cfg: Config) -> Preflight:
    """`mode=check`: every preflight check, the run folder, and the cluster's resources when
    `cluster.address` (or RAY_ADDRESS) names one; loads no weights and starts no Ray. A run
    folder or cluster the run could not use is a failed check (`Preflight.failed`)."""
    cfg = resolve_paths(cfg)
    result = preflight(cfg)
    reason = unwritable(cfg.run_uri)
    if reason:
        result.failed.append(f"run folder {cfg.run_uri}: {reason}")
    else:
        result.checks.append(f"run folder {cfg.run_uri}: writable")
    where = cluster.target(cfg.cluster)
    if where is None:
        return result
    try:
        cluster.check_address(where, cfg.cluster.connect_timeout_s)
    except cluster.ClusterUnreachable as err:
        result.failed.append(f"cluster: {err}")
        return result
    cluster.connect(cfg.cluster)
    import ray

    check_resources(cfg, ray.cluster_resources())
    result.checks.append(f"cluster {where.address}: reachable, and the actor pools fit")
    return result


def probe(cfg: Config) -> dict:
    """`mode=probe`: the generator's preflight checks and the run folder, then
    `steps/generate/probe.py` in this process (no Ray); returns what it wrote to probe.json."""
    from .steps.generate.probe import run_probe

    cfg = resolve_paths(cfg)
    cfg = dataclasses.replace(cfg, steps=["generate"])
    checked = preflight(cfg)
    for note in checked.notes:
        log.info("note: %s", note)
    cfg = with_found_family(cfg, checked)
    reason = unwritable(cfg.run_uri)
    if reason:
        raise ConfigError(f"output_dir={cfg.output_dir}: {cfg.run_uri} cannot be written: {reason}")
    return run_probe(cfg)


def connect(cfg: Config) -> None:
    """Join the cluster named by cluster.address (or RAY_ADDRESS), else start a local Ray;
    then the resource check."""
    import ray

    cluster.connect(cfg.cluster)
    console.reapply()
    if cfg.cluster.check_resources:
        check_resources(cfg, ray.cluster_resources())


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


def _pool_gpus(cfg: Config, pools) -> tuple[float, float]:
    """(actors, GPUs) the named tag pools hold (max_actors when autoscaling)."""
    actors = gpus = 0.0
    for name in pools:
        pool = getattr(cfg, name).pool
        n = pool.max_actors or pool.num_actors
        actors, gpus = actors + n, gpus + n * pool.gpus_per_actor
    return actors, gpus


def record_costs(cfg: Config, store: RunStore, gen_stats, tag_stats, streamed: bool) -> None:
    """What this invocation's row-wise steps held and did, into the run's logs/steps/ (costs.py):
    streamed, the tag pools are held through generation too."""
    if gen_stats is not None:
        actors = gen_stats.actors
        costs.record(
            store,
            costs.StepRecord(
                step="generate",
                wall_s=gen_stats.wall_seconds,
                actors=actors,
                gpu_s=actors * cfg.cluster.gpus_per_actor * gen_stats.wall_seconds,
                output_tokens=gen_stats.output_tokens,
                busy_s=gen_stats.engine_busy_seconds,
                generation_s=gen_stats.generation_seconds,
            ),
        )
    if tag_stats is not None:
        wall = tag_stats.wall_seconds + (gen_stats.wall_seconds if streamed and gen_stats else 0)
        actors, gpus = _pool_gpus(cfg, tag_stats.pools)
        costs.record(store, costs.StepRecord("tag", wall, actors, gpus * wall))


def streams(cfg: Config) -> bool:
    """Whether generation streams into tagging: `tag.stream` and both steps run."""
    return cfg.tag.stream and {"generate", "tag"} <= set(cfg.steps)


def run(cfg: Config, config_yaml: str = "", overrides: list[str] | None = None) -> RunResult:
    """Preflight, then every step of `cfg.steps` in order; model paths are resolved here.
    `config_yaml` is written into the run folder (and beside the dataset card); `overrides`,
    the command line's, make the card's reproduce command."""
    cfg = resolve_paths(cfg)
    checked = preflight(cfg)
    for note in checked.notes:
        log.info("note: %s", note)
    cfg = with_found_family(cfg, checked)
    check_doors(cfg)
    store = RunStore(cfg.run_uri)
    if config_yaml:
        store.write_text("config.yaml", config_yaml)
    connect(cfg)
    steps = set(cfg.steps)
    gen_stats = tag_stats = dedup_stats = select_stats = export_stats = None
    streamed = stream.StreamedPass(store) if streams(cfg) else None
    if "generate" in steps:
        gen_stats = generate.run_step(cfg, store, first_pass=streamed)
    incomplete = incomplete_reason(gen_stats, None)
    if "tag" in steps and incomplete is None:
        tag_stats = tag.run_step(cfg, store, **(streamed.tag_counts() if streamed else {}))
        incomplete = incomplete_reason(None, tag_stats)
    record_costs(cfg, store, gen_stats, tag_stats, streamed is not None)
    if incomplete is None:
        dedup_stats = dedup.run_step(cfg, store) if "dedup" in steps else None
        select_stats = select.run_step(cfg, store) if "select" in steps else None
        if "export" in steps:
            export_stats = export.run_step(cfg, store, config_yaml, overrides)
    invocation = invocation_lines(gen_stats, tag_stats)
    return RunResult(
        summary=summarize(
            store,
            cfg.examples_to_print,
            requested=cfg.generate.num_samples,
            gpu_hour_usd=cfg.cluster.gpu_hour_usd,
        ),
        generate=gen_stats,
        tag=tag_stats,
        dedup=dedup_stats,
        select=select_stats,
        export=export_stats,
        report_path=write_report(
            store,
            f"magpie-ray run {cfg.run_name}",
            invocation,
            cfg.seed,
            requested=cfg.generate.num_samples,
            gpu_hour_usd=cfg.cluster.gpu_hour_usd,
        ),
        incomplete=incomplete,
    )
