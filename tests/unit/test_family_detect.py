"""The family found from a tokenizer's chat template (families/detect.py), on the official
templates' tokenizers (tests/unit/test_official_templates.py): a family that renders the template
exactly wins over one that matches only through its declared deviation; families that would
sample differently are an error that names them; a wrong model.family is told which one fits."""

from __future__ import annotations

import pytest

from magpie_ray.choices import ConfigError
from magpie_ray.config import Config
from magpie_ray.families.detect import detect_family
from magpie_ray.families.templates import TemplateError
from magpie_ray.preflight import Preflight, check_generator
from tests.conftest import CACHE
from tests.helpers import npm_tokenizer
from tests.unit.test_official_templates import CASES, _tokenizer

# (case's family, its template) -> the family found. Where a family exists only to follow the
# reference's pre-query rather than the template (gemma2, llama3.3), the one that renders the
# template exactly is found.
FOUND = {
    ("qwen2", 0): "qwen2",  # through its declared deviation: no family renders it exactly
    ("qwen2.5", 0): "qwen2.5",
    ("gemma", 0): "gemma",
    ("gemma2", 0): "gemma",
    ("gemma3", 0): "gemma3",
    ("gemma3", 1): "gemma3",
    ("llama3", 0): "llama3",
    ("llama3.1", 0): "llama3.1",
    ("llama3.1", 1): "llama3.1",
    ("llama3.2", 0): "llama3.2",
    ("llama3.3", 0): "llama3.1",
    ("llama4", 0): "llama4",
    ("phi3", 0): "phi3",
    ("phi4", 0): "phi4",
    ("deepseek-coder-v2", 0): "deepseek-coder-v2",
    ("smollm3", 0): "smollm3",
    ("gpt-oss", 0): "gpt-oss",
}


@pytest.mark.parametrize("key", sorted(FOUND), ids=lambda k: f"{k[0]}-{k[1]}")
def test_the_family_is_found_from_the_official_template(key):
    name, index = key
    found, how = detect_family(_tokenizer(CASES[name][index]))
    assert found == FOUND[key], how
    assert how.startswith(f"model.family={found}: found from the tokenizer")


def test_families_that_would_sample_differently_are_named():
    with pytest.raises(TemplateError, match="would sample differently") as err:
        detect_family(_tokenizer(CASES["qwen3"][0]))
    assert "qwen3, qwen3-instruct-2507" in str(err.value)


def test_a_tokenizer_without_a_chat_template_asks_for_the_family():
    tokenizer = npm_tokenizer("llama3")
    saved, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        with pytest.raises(TemplateError, match="has no chat template"):
            detect_family(tokenizer)
    finally:
        tokenizer.chat_template = saved


def test_a_wrong_family_is_told_which_one_matches():
    cfg = Config()
    cfg.model.path = str(CACHE / "tokenizers" / "qwen2_5")  # Qwen2.5's tokenizer and template
    cfg.model.family = "smollm2"
    with pytest.raises(ConfigError) as err:
        check_generator(cfg, Preflight())
    message = str(err.value)
    assert message.startswith(f"model.family=smollm2 vs {cfg.model.path}: ")
    assert message.endswith(
        "This tokenizer's chat template matches family qwen2.5 (found from the tokenizer,"
        " matching exactly): set model.family=qwen2.5"
    )


def test_an_unset_family_is_found_at_preflight():
    cfg = Config()
    cfg.model.path = str(CACHE / "models" / "smollm2-135m-instruct")
    cfg.model.family = None  # model=local, or model.family=null
    result = Preflight()
    check_generator(cfg, result)
    assert result.family == "smollm2"
    assert "model.family=smollm2: found from the tokenizer, matching exactly" in result.checks
    hub = Config()
    hub.model.path, hub.model.family = "Qwen/Qwen2.5-7B-Instruct", None
    with pytest.raises(ConfigError, match="no tokenizer here to find it from: set model.family"):
        check_generator(hub, Preflight())


def test_a_tokenizer_no_family_matches_lists_what_was_tried():
    cfg = Config()
    cfg.model.path = str(CACHE / "tokenizers" / "qwen3")  # Qwen3: three families, unlike
    cfg.model.family = None
    with pytest.raises(ConfigError, match="would sample differently") as err:
        check_generator(cfg, Preflight())
    assert str(err.value).startswith("model.family is not set, and for ")
