"""Ray metrics of a running job, for the Ray dashboard and Prometheus (`ray.util.metrics`).

Counters, each tagged with the run's name (`run`), bumped by the process that did the work (engine
actors, tag writers) as each batch finishes:

    magpie_rows_generated     rows kept by the generate step
    magpie_rows_dropped       rows the generate step dropped, tagged by `reason`
    magpie_output_tokens      tokens the engines wrote (instructions, answers, samples)
    magpie_engine_busy_seconds  seconds the engines spent advancing their models
    magpie_rows_tagged        rows written to tagged/

Ray exports them with its own prefix (`ray_magpie_rows_generated_total` in Prometheus). Outside
a Ray worker or driver, and wherever Ray's metrics cannot be created, a call does nothing: a
metric is never a reason for a batch to fail.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "magpie_rows_generated": "Rows kept by the generate step",
    "magpie_rows_dropped": "Rows dropped by the generate step, by reason",
    "magpie_output_tokens": "Output tokens written by the engines",
    "magpie_engine_busy_seconds": "Seconds the engines spent advancing their models",
    "magpie_rows_tagged": "Rows written by the tag step",
}
_counters: dict = {}


def run_label(run_uri: str) -> str:
    """The run's name as a metric tag: the last part of its folder or URI."""
    return PurePosixPath(str(run_uri).rstrip("/")).name or str(run_uri)


def count(name: str, value: float, run: str, **tags: str) -> None:
    """Add `value` to counter `name` (one of DESCRIPTIONS) with the run's and the given tags."""
    if value <= 0:
        return
    try:
        import ray

        if not ray.is_initialized():
            return
        counter = _counters.get(name)
        if counter is None:
            from ray.util.metrics import Counter

            keys = ("run", *sorted(tags))
            counter = _counters[name] = Counter(name, DESCRIPTIONS[name], tag_keys=keys)
        counter.inc(value, tags={"run": run, **tags})
    except Exception as err:  # noqa: BLE001 - metrics are best effort, rows are not
        log.debug("metric %s not recorded: %s", name, err)
