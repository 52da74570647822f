"""Closed choices of the config schema (`StrEnum`s: OmegaConf rejects an unknown value at compose
time, listing the valid ones, and a member still equals its string), and `ConfigError`. A leaf
module: it imports nothing of ours; `config` re-exports every name.
"""

from __future__ import annotations

from enum import StrEnum


class ConfigError(ValueError):
    """A config value that cannot work; the message says which and how to fix it."""


class Step(StrEnum):
    generate = "generate"
    tag = "tag"
    dedup = "dedup"
    select = "select"
    export = "export"


class EngineKind(StrEnum):
    vllm = "vllm"  # production: continuous batching, constrained decoding
    hf = "hf"  # transformers: the fallback


class JudgeTask(StrEnum):
    difficulty = "difficulty"
    quality = "quality"
    classification = "classification"


class ExportFormat(StrEnum):
    sharegpt = "sharegpt"
    messages = "messages"
    dpo = "dpo"
    parquet = "parquet"


class Mode(StrEnum):
    run = "run"  # the steps
    check = "check"  # every preflight check, then exit without loading any weights


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
