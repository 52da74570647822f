"""Secrets out of what a run writes down: the `config.yaml` of every run folder is published
with the data, so the values of credential-like `cluster.actor_env` variables are replaced by
`REDACTED` there. Pure: the run itself keeps using the real values (callers redact a copy).

A variable looks like a credential when one word of its name (split at every character that
is not a letter or digit) ends with a marker: `HF_TOKEN`, `AWS_SECRET_ACCESS_KEY`,
`WANDB_API_KEY`, `DB_PASSWORD`, `GOOGLE_APPLICATION_CREDENTIALS`, `HFTOKEN`. Whole words
rather than substrings, so `TOKENIZERS_PARALLELISM` stays readable; a harmless name that
happens to end with a marker (`MONKEY`) is redacted too, which costs only readability.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from .config import Config

REDACTED = "***"
_MARKERS = (
    "TOKEN",
    "TOKENS",
    "KEY",
    "KEYS",
    "SECRET",
    "SECRETS",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "CREDENTIALS",
    "CREDS",
)
_WORD_SEPARATORS = re.compile(r"[^A-Z0-9]+")


def looks_like_credential(name: str) -> bool:
    """True when a word of the variable name ends with a credential marker (case-insensitive)."""
    words = _WORD_SEPARATORS.split(name.upper())
    return any(word.endswith(_MARKERS) for word in words if word)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` with every credential-like variable's value replaced by `REDACTED`."""
    return {name: REDACTED if looks_like_credential(name) else v for name, v in env.items()}


def redacted(cfg: Config) -> Config:
    """A copy of `cfg` fit to write into a run folder: `cluster.actor_env` redacted. `cfg` is
    not changed, so the run it drives still passes the real values to its actors."""
    cluster = dataclasses.replace(cfg.cluster, actor_env=redact_env(cfg.cluster.actor_env))
    return dataclasses.replace(cfg, cluster=cluster)


def config_yaml(cfg: Config) -> str:
    """The `config.yaml` written beside a run's outputs and its dataset card: `cfg` redacted."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(redacted(cfg)))
