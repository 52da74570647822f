"""The family found from a tokenizer's chat template (families/detect.py), on the official
templates' tokenizers (tests/unit/test_official_templates.py): a family that renders the template
exactly wins over one that matches only through its declared deviation; families that would
sample differently are an error that names them; a wrong model.family is told which one fits."""

from __future__ import annotations

import dataclasses

import pytest

from magpie_ray.choices import ConfigError
from magpie_ray.config import Config
from magpie_ray.families.detect import detect_family
from magpie_ray.families.templates import TemplateError, list_families, load_family
from magpie_ray.preflight import Preflight, check_generator
from tests.conftest import CACHE
from tests.helpers import npm_tokenizer
from tests.unit.test_official_templates import CASES, _family, _tokenizer

# Where a family exists only to follow the reference's pre-query on another family's template
# (gemma2 on Gemma 2's, llama3.3 on Llama 3.1's and 3.3's), the family that renders the
# template exactly is found; every other official template finds its own family.
RENDERS_EXACTLY = {"gemma2": "gemma", "llama3.3": "llama3.1"}
ALL_CASES = [(name, i) for name, cases in CASES.items() for i in range(len(cases))]


def _families(case) -> list:
    """The shipped families as the official-template test checks them: stop ids dropped where
    the npm tokenizer stands in for the real vocabulary, system prompts where the template copy
    cannot render one."""
    families = [_family(name, case) for name in list_families()]
    if case.no_system_turn:
        families = [
            dataclasses.replace(f, system_prompts={}, system_prompt_template=None) for f in families
        ]
    return families


@pytest.mark.parametrize("key", ALL_CASES, ids=lambda k: f"{k[0]}-{k[1]}")
def test_the_family_is_found_from_every_official_template(key):
    name, index = key
    case = CASES[name][index]
    found, how = detect_family(_tokenizer(case), families=_families(case))
    assert found == RENDERS_EXACTLY.get(name, name), how
    assert how.startswith(f"model.family={found}: found from the tokenizer")
    assert ("declared deviation" in how) == (case.deviation and name not in RENDERS_EXACTLY)


def test_families_that_would_sample_differently_are_named():
    case = CASES["qwen2.5"][0]
    other = dataclasses.replace(load_family("qwen2.5"), name="qwen2.5-other", sanitize=True)
    with pytest.raises(TemplateError, match="would sample differently") as err:
        detect_family(_tokenizer(case), families=[load_family("qwen2.5"), other])
    assert "families qwen2.5, qwen2.5-other all match" in str(err.value)
    alike = dataclasses.replace(load_family("qwen2.5"), name="qwen2.5-alike", models=("x",))
    found, how = detect_family(_tokenizer(case), families=[load_family("qwen2.5"), alike])
    assert found == "qwen2.5" and how.endswith("(samples as qwen2.5-alike would)")


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


def test_a_tokenizer_no_family_matches_lists_what_was_tried(tmp_path):
    cfg = Config()
    cfg.model.path = str(CACHE / "tokenizers" / "qwen3")  # Qwen3's tokenizer and template
    cfg.model.family = None
    result = Preflight()
    check_generator(cfg, result)  # its thinking switch: qwen3, not qwen2 or the 2507 models
    assert result.family == "qwen3"
    plain = tmp_path / "plain"  # a template no family renders
    tokenizer = npm_tokenizer("qwen3")
    saved = tokenizer.chat_template
    try:
        tokenizer.chat_template = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
        tokenizer.save_pretrained(plain)
    finally:
        tokenizer.chat_template = saved
    cfg.model.path = str(plain)
    with pytest.raises(ConfigError, match="no model family matches") as err:
        check_generator(cfg, Preflight())
    assert str(err.value).startswith("model.family is not set, and for ")
    assert "tried deepseek-coder-v2, deepseek-r1" in str(err.value)
