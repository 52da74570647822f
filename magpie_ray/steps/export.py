"""Export step: the selected rows as SFT / preference files (`export_formats.py`, written by
`export_writer.py`).

Reads the `selected/` parts (after a finished select step) one at a time, in output order, and
writes the `exports/` files as it goes (export.write_exports), so the driver never holds the
selected rows. Resume:
`exports/_manifest.json` names the selected parts and export config the files were made from; a
rerun with both unchanged does nothing. The dataset card (`dataset_card.py`, with
export.card) is written after the files every time the step runs: it names this invocation's
command.
"""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError
from ..dataset_card import write_card
from ..export_writer import EXPORT_DIR, ExportStats, Parts, write_exports
from ..storage import RunStore

INPUT_STEP = "select"


def run_step(
    cfg, store: RunStore, config_yaml: str = "", overrides: list[str] | None = None
) -> ExportStats:
    """Export the selected rows, unless exports/ was already made from them with this config;
    then the dataset card (`config_yaml`: the run's config as written beside it; `overrides`:
    the command line's, for the card's reproduce command)."""
    source, target = store.kept_dir(INPUT_STEP), posixpath.join(store.root, EXPORT_DIR)
    if store.read_manifest(source) is None:
        raise ConfigError(f"no finished selection in {source}: run the select step first")
    fingerprint = {"inputs": store.fingerprint(source), "config": asdict(cfg.export)}

    def export() -> ExportStats:
        parts = store.part_files(source)
        empty = None
        if not parts:  # the filter kept nothing: empty files, with the full schema
            deduped = store.part_files(store.kept_dir("dedup"))
            empty = pa.unify_schemas(
                [pq.read_schema(p, filesystem=store.fs) for p in deduped],
                promote_options="default",
            )
        return write_exports(store, Parts.of_files(store, parts, empty), cfg.export)

    stats = store.once(target, fingerprint, ExportStats, export)
    if not cfg.export.card:
        return stats
    if not config_yaml:
        from ..redact import config_yaml as make_yaml

        config_yaml = make_yaml(cfg)
    card, seconds = write_card(cfg, store, config_yaml, overrides)
    return dataclasses.replace(stats, card=card, card_seconds=seconds)
