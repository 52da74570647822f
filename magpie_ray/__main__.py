"""`python -m magpie_ray [hydra overrides]`: the only module that imports Hydra.

Composes `conf/` onto the `Config` schema, turns it into plain dataclasses, resolves paths
relative to where the command was run, and calls `pipeline.run`. Config errors print one clear
message and exit with status 2 before any model loads.
"""

from __future__ import annotations

import os
import posixpath
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import console
from .config import Config, ConfigError, Mode, register
from .paths import is_uri, resolve_paths
from .redact import config_yaml
from .validation import advice

# Set by Ray's job supervisor for an entrypoint started with `ray job submit`.
_RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# Exit status of a run that finished with rows missing (2 is a config error).
INCOMPLETE_EXIT = 3

register()


def _resolve_output_dir(cfg: Config) -> None:
    if is_uri(cfg.output_dir) or os.path.isabs(cfg.output_dir):
        return
    if _RAY_JOB_ENV in os.environ:
        raise ConfigError(
            f"output_dir={cfg.output_dir!r} is relative, and under `ray job submit` that is the "
            "job's temporary working dir: pass an absolute path or a URI, e.g. "
            "output_dir=/data/magpie or output_dir=s3://bucket/magpie"
        )
    cfg.output_dir = os.path.abspath(cfg.output_dir)


def _check(cfg: Config) -> None:
    """`mode=check`: print what every preflight check found, then stop (no weights load)."""
    from . import pipeline

    result = pipeline.check(cfg)
    for line in result.checks:
        print(f"ok: {line}")
    for line in result.failed:
        print(f"failed: {line}")
    for note in [*result.notes, *advice(cfg)]:
        print(f"note: {note}")
    if result.failed:
        total = len(result.checks) + len(result.failed)
        print(
            f"magpie_ray: error: {len(result.failed)} of {total} checks failed; nothing was"
            " loaded or run",
            file=sys.stderr,
        )
        sys.exit(2)
    print(f"magpie_ray: all {len(result.checks)} checks passed; nothing was loaded or run")


def _probe(cfg: Config) -> None:
    """`mode=probe`: sample instructions from each pre-query variant, print them side by side."""
    from . import pipeline
    from .steps.generate.probe import PROBE_NAME, format_probe

    log_file = console.log_path(cfg.log_file, cfg.run_uri, cfg.run_name)
    console.setup(cfg.quiet, log_file)
    if cfg.quiet:
        console.route_native_stderr(log_file)
        os.environ.update({**console.QUIET_ACTOR_ENV, **cfg.cluster.actor_env})
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the engine loads its weights here
    print(f"magpie_ray: log file {log_file}", file=sys.stderr)
    result = pipeline.probe(cfg)
    print(format_probe(result))
    print(f"probe: {cfg.run_uri.rstrip('/')}/{PROBE_NAME} ({result['seconds']:.0f} s)")


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from . import pipeline
    from .dataset_card import upload_command
    from .report import format_global_steps, format_summary

    try:
        cfg: Config = resolve_paths(OmegaConf.to_object(dcfg))
        if cfg.mode == Mode.check:
            _check(cfg)
            return
        _resolve_output_dir(cfg)
        if cfg.mode == Mode.probe:
            _probe(cfg)
            return
        # The run folder and the cluster answer before anything is written or started.
        pipeline.check_doors(cfg)
        log_file = console.log_path(cfg.log_file, cfg.run_uri, cfg.run_name)
        console.setup(cfg.quiet, log_file)
        if cfg.quiet:
            console.route_native_stderr(log_file)
        print(f"magpie_ray: log file {log_file}", file=sys.stderr)
        for note in advice(cfg):
            print(f"magpie_ray: note: {note}", file=sys.stderr)
        # The run uses the real actor_env; the config.yaml it writes (published with the data)
        # holds credential-like values redacted.
        overrides = list(HydraConfig.get().overrides.task)
        result = pipeline.run(cfg, config_yaml=config_yaml(cfg), overrides=overrides)
    except ConfigError as err:
        print(f"magpie_ray: error: {err}", file=sys.stderr)
        sys.exit(2)
    print("=" * 72)
    print(format_summary(result.summary, result.generate, tag_stats=result.tag))
    global_steps = format_global_steps(result.dedup, result.select, result.export)
    if global_steps:
        print(global_steps)
    print(f"report: {result.report_path}")
    if result.export is not None and result.export.card:
        print(f"dataset card: {result.export.card} ({result.export.card_seconds:.1f} s)")
        if cfg.export.hub_repo:
            exports = posixpath.dirname(result.export.card)
            print(f"upload: {upload_command(cfg.export.hub_repo, exports)}")
    print("=" * 72)
    if result.incomplete:
        print(f"magpie_ray: error: the run is incomplete: {result.incomplete}", file=sys.stderr)
        sys.exit(INCOMPLETE_EXIT)


if __name__ == "__main__":
    main()
