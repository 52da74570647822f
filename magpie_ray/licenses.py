"""The license a released dataset inherits from the models that wrote its rows.

A model's license comes from, in order: the front matter of the model folder's own model card
(`README.md`, as downloaded from the Hub: `license`, and for `other` also `license_name` and
`license_link`), read with huggingface_hub's card parser; else the id its config declares
(`model.license`, set by the presets and recipes); else `other`, said so in the card. Only a
local folder is read: nothing goes over the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

UNKNOWN = "other"


@dataclass(frozen=True)
class ModelLicense:
    role: str  # "instructions", "responses", ...
    model: str  # the name recorded in the rows
    path: str
    license: str  # a Hub license id, or "other"
    name: str | None = None  # license_name (with `other`)
    link: str | None = None  # license_link (with `other`)
    source: str = ""  # where the id was read: "model card", "config", "unknown"
    revision: str | None = None  # a Hub snapshot's commit, where the path shows one

    def license_label(self) -> str:
        """`apache-2.0`, or `other (qwen, <link>)`."""
        extra = ", ".join(x for x in (self.name, self.link) if x)
        return f"`{self.license}`" + (f" ({extra})" if extra else "")


def _front_matter(path: str) -> dict:
    readme = os.path.join(path, "README.md")
    if not os.path.isfile(readme):
        return {}
    from huggingface_hub import repocard

    try:
        return repocard.metadata_load(readme) or {}
    except Exception:  # a README without valid YAML front matter says nothing
        return {}


def revision(path: str) -> str | None:
    """The commit of a Hub cache snapshot (`.../models--org--name/snapshots/<commit>`)."""
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) >= 2 and parts[-2] == "snapshots" and len(parts[-1]) == 40:
        return parts[-1]
    return None


def model_license(role: str, fields) -> ModelLicense:
    """The license of one model (`fields`: its ModelFields config)."""
    path = fields.path or ""
    name = fields.name or path
    card = _front_matter(path) if path and os.path.isdir(path) else {}
    rev = revision(path)
    if isinstance(card.get("license"), str):
        return ModelLicense(
            role,
            name,
            path,
            card["license"],
            card.get("license_name"),
            card.get("license_link"),
            "model card",
            rev,
        )
    if fields.license:
        return ModelLicense(
            role,
            name,
            path,
            fields.license,
            fields.license_name,
            fields.license_link,
            "config",
            rev,
        )
    return ModelLicense(role, name, path, UNKNOWN, source="unknown", revision=rev)


def generating_models(cfg) -> list[ModelLicense]:
    """The models whose text is in the rows: the instruction model (which also answers unless
    a responder does), the responder, and the base model whose answers a column holds."""
    responder = cfg.generate.responder.path is not None
    role = "instructions" if responder else "instructions and responses"
    models = [model_license(role, cfg.model)]
    if responder:
        models.append(model_license("responses", cfg.generate.responder))
    if cfg.generate.base.path is not None:
        models.append(model_license("base-model answers (a column)", cfg.generate.base))
    return models


def dataset_license(models: list[ModelLicense]) -> dict:
    """The card's license fields: one id, or the list of ids where the models differ; with
    `other`, license_name / license_link where exactly one model gives them."""
    ids = list(dict.fromkeys(m.license for m in models))
    fields: dict = {"license": ids[0] if len(ids) == 1 else ids}
    named = list(dict.fromkeys((m.name, m.link) for m in models if m.license == UNKNOWN and m.name))
    if len(named) == 1:
        fields["license_name"], link = named[0]
        if link:
            fields["license_link"] = link
    return fields
