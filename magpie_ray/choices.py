"""Closed choices of the config schema (`StrEnum`s: OmegaConf rejects an unknown value at compose
time, listing the valid ones, and a member still equals its string), and `ConfigError`. A leaf
module apart from the engine and export-format registries (leaves themselves); `config`
re-exports every name.
"""

from __future__ import annotations

from enum import StrEnum

from .engines.registry import ENGINES
from .export_formats import FORMATS


class ConfigError(ValueError):
    """A config value that cannot work; the message says which and how to fix it."""


class Step(StrEnum):
    generate = "generate"
    tag = "tag"
    dedup = "dedup"
    select = "select"
    export = "export"


# One member per engine of the registry (`engines/registry.py`).
EngineKind = StrEnum("EngineKind", [(name, name) for name in ENGINES])


# One member per format of the registry (`export_formats.py`).
ExportFormat = StrEnum("ExportFormat", [(name, name) for name in FORMATS])


class JudgeTask(StrEnum):
    difficulty = "difficulty"
    quality = "quality"
    classification = "classification"


class Mode(StrEnum):
    run = "run"  # the steps
    check = "check"  # every preflight check, then exit without loading any weights
    probe = "probe"  # the generator alone samples instructions from each pre-query variant


class PreQuery(StrEnum):
    """Which pre-query a run's instructions are sampled from (families/variants.py)."""

    family = "family"  # the family's own (default)
    template = "template"  # what the chat template renders before a user's words
    no_system = "no_system"  # the user turn alone, without any system turn


class Thinking(StrEnum):
    """A reasoning model's mode; which ones a family supports is in its YAML (`thinking`)."""

    off = "off"
    on = "on"
    low = "low"  # gpt-oss reasoning efforts
    medium = "medium"
    high = "high"


class SanitizerRules(StrEnum):
    ours = "ours"  # sanitize.py: deletes labels, numbering and leaked answers only
    reference = "reference"  # the reference's truncation to one question or line (parity)


class IndexKind(StrEnum):
    auto = "auto"  # flat up to dedup.exact_max_rows, ivf beyond
    flat = "flat"
    ivf = "ivf"
