"""Render a kustomization the way `kubectl kustomize` does, for the subset deploy/kuberay uses.

There is no kustomize binary here (nor in CI), so tests render overlays with this. Supported
`kustomization.yaml` keys:

- `resources`: YAML files (one or more documents) and directories holding a kustomization
- `images`: `name` -> `newName` / `newTag`, applied to every `containers` / `initContainers`
  entry anywhere in a resource (kustomize's behaviour for custom resources such as RayJob)
- `patches`: RFC 6902 JSON patches (a YAML list of operations, from `path` or inline `patch`)
  with a `target` selected by `kind` and `name`

Anything else (another key, a strategic-merge patch, a target matching nothing) is an error, so
an overlay cannot depend on a feature this renderer would silently ignore.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

KUSTOMIZATION = "kustomization.yaml"
_KNOWN_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}


class KustomizeError(ValueError):
    """A kustomization this renderer cannot render exactly as kustomize would."""


def render(directory: Path) -> list[dict]:
    """The resources of the kustomization in `directory`, transformed, in kustomize's order."""
    directory = Path(directory)
    spec = yaml.safe_load((directory / KUSTOMIZATION).read_text()) or {}
    unknown = set(spec) - _KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{directory}/{KUSTOMIZATION}: unsupported keys {sorted(unknown)}")
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    for patch in spec.get("patches", []):
        apply_patch_entry(docs, patch, directory)
    for image in spec.get("images", []):
        for doc in docs:
            set_image(doc, image)
    return docs


def apply_patch_entry(docs: list[dict], entry: dict, directory: Path) -> None:
    if "path" in entry:
        ops = yaml.safe_load((directory / entry["path"]).read_text())
    else:
        ops = yaml.safe_load(entry["patch"])
    if not isinstance(ops, list):
        raise KustomizeError(f"{entry}: only RFC 6902 patches (a list of operations) are supported")
    target = entry.get("target") or {}
    matched = [
        i
        for i, d in enumerate(docs)
        if d.get("kind") == target.get("kind") and d["metadata"]["name"] == target.get("name")
    ]
    if not matched:
        raise KustomizeError(f"patch target {target} matches no resource")
    for i in matched:
        docs[i] = json_patch(docs[i], ops)


def json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 add / remove / replace / test on a copy of `doc`."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for token in parents:
            node = node[_index(node, token)]
        kind = op["op"]
        if kind == "add":
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else _index(node, last), op["value"])
            else:
                node[last] = op["value"]
        elif kind in ("replace", "remove", "test"):
            key = _index(node, last)
            if isinstance(node, dict) and key not in node:
                raise KustomizeError(f"{kind} {op['path']}: no such member")
            if kind == "replace":
                node[key] = op["value"]
            elif kind == "remove":
                del node[key]
            elif node[key] != op["value"]:
                raise KustomizeError(f"test {op['path']}: {node[key]!r} != {op['value']!r}")
        else:
            raise KustomizeError(f"unsupported patch op {kind!r}")
    return doc


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(node, token: str):
    if isinstance(node, list):
        index = int(token)
        if not 0 <= index < len(node):
            raise KustomizeError(f"index {index} out of range (list of {len(node)})")
        return index
    return token


def set_image(node, image: dict) -> None:
    """kustomize `images`: rewrite matching images of every container list in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    container["image"] = _new_image(container.get("image", ""), image)
            else:
                set_image(value, image)
    elif isinstance(node, list):
        for item in node:
            set_image(item, image)


def _new_image(current: str, image: dict) -> str:
    name, sep, tag = current.rpartition(":")
    if not sep or "/" in tag:  # no tag, or the colon was a registry port
        name, tag = current, ""
    if name != image["name"]:
        return current
    new_name, new_tag = image.get("newName", name), image.get("newTag", tag)
    return f"{new_name}:{new_tag}" if new_tag else new_name
