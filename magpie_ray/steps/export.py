"""Export step: the selected rows as SFT / preference files (formats: `magpie_ray/export.py`).

Reads every `selected/` part (after a finished select step). Writes `exports/` files. Resume:
`exports/_manifest.json` names the selected parts and export config the files were made from; a
rerun with both unchanged does nothing.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict

from ..config import ConfigError
from ..export import EXPORT_DIR, ExportStats, write_exports
from ..storage import RunStore

INPUT_STEP = "select"


def run_step(cfg, store: RunStore) -> ExportStats:
    """Export the selected rows, unless exports/ was already made from them with this config."""
    source, target = store.kept_dir(INPUT_STEP), posixpath.join(store.root, EXPORT_DIR)
    if store.read_manifest(source) is None:
        raise ConfigError(f"no finished selection in {source}: run the select step first")
    fingerprint = {"inputs": store.fingerprint(source), "config": asdict(cfg.export)}

    def export() -> ExportStats:
        table = store.read_parts(source)
        if table is None:  # the filter kept nothing: empty files, with the full schema
            table = store.read_parts(store.kept_dir("dedup")).slice(0, 0)
        return write_exports(store, table, cfg.export)

    return store.once(target, fingerprint, ExportStats, export)
