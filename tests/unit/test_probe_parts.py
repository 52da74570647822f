"""The probe's pieces on known inputs: why an instruction is no use, the near-duplicate share,
the pre-query variants of real families against their real templates, and the run setting that
selects a variant (generate.instruction.pre_query), checked at preflight."""

from __future__ import annotations

import datetime
import types

import numpy as np
import pytest

from magpie_ray.choices import ConfigError
from magpie_ray.config import Config
from magpie_ray.families.templates import load_family
from magpie_ray.families.variants import pre_query_variants
from magpie_ray.preflight import Preflight, check_generator
from magpie_ray.steps.generate.chat_model import ChatModel
from magpie_ray.steps.generate.probe import near_duplicate_share, why_unusable
from tests.conftest import CACHE
from tests.helpers import npm_tokenizer
from tests.unit.test_official_templates import CASES, _tokenizer

TODAY = datetime.date(2026, 12, 8)


def test_why_an_instruction_is_no_use():
    assert why_unusable("  ", "stop", "") == "empty"
    assert why_unusable("How do I", "length", "How do I") == "cut at max_tokens"
    assert why_unusable("1. ", "stop", "") == "removed by the sanitizer"
    assert why_unusable("Sure! Here", "stop", "Sure! Here") == "opens like an assistant's reply"
    assert why_unusable("Hi, I'm", "stop", "Hi, I'm") == "opens like an assistant's reply"
    assert why_unusable("How do I sort a list?", "stop", "How do I sort a list?") is None
    assert why_unusable("Historians say", "stop", "Historians say") is None  # not "Hi"


def test_near_duplicate_share_counts_rows_close_to_an_earlier_one():
    a, b = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    close = (a + 0.01 * b) / np.linalg.norm(a + 0.01 * b)
    assert near_duplicate_share(np.stack([a, b, close]), 0.05) == pytest.approx(1 / 3)
    assert near_duplicate_share(np.stack([a, b]), 0.05) == 0.0
    assert near_duplicate_share(np.zeros((0, 3), np.float32), 0.05) is None


def test_variants_of_real_families_on_their_templates():
    smollm2 = pre_query_variants(load_family("smollm2"), npm_tokenizer("smollm2"), TODAY)
    assert list(smollm2) == ["family", "no_system"]  # its template renders its own pre-query
    assert smollm2["no_system"] == "<|im_start|>user\n"  # SmolLM2's BOS is the turn marker
    qwen2 = pre_query_variants(load_family("qwen2"), _tokenizer(CASES["qwen2"][0]), TODAY)
    default = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    # the reference's: no system turn; the template's: its default system turn
    assert qwen2 == {"family": "<|im_start|>user\n", "template": default + "<|im_start|>user\n"}
    llama = pre_query_variants(load_family("llama3.1"), _tokenizer(CASES["llama3.1"][0]), TODAY)
    assert llama["no_system"] == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    assert "Cutting Knowledge Date" in llama["family"]
    oss = pre_query_variants(load_family("gpt-oss"), _tokenizer(CASES["gpt-oss"][0]), TODAY)
    assert list(oss) == ["family"]  # harmony renders its own prompts


def test_a_run_samples_from_the_variant_it_names():
    tokenizer = npm_tokenizer("smollm2")
    engine = types.SimpleNamespace(tokenizer=tokenizer)  # pre_query() only tokenizes
    model = ChatModel(engine, load_family("smollm2"), "m", "vllm", 512, None, (), ())
    bare = ChatModel(engine, load_family("smollm2"), "m", "vllm", 512, None, (), (),
                     pre_query_variant="no_system")  # fmt: skip
    assert model.pre_query(None, TODAY)[0].startswith("<|im_start|>system\n")
    text, ids = bare.pre_query(None, TODAY)
    assert text == "<|im_start|>user\n" and ids == tokenizer.encode(text, add_special_tokens=False)
    assert bare.pre_query("math", TODAY)[0].startswith("<|im_start|>system\n")  # named: as ever


def test_preflight_checks_the_variant_exists():
    cfg = Config()
    cfg.model.path = str(CACHE / "models" / "smollm2-135m-instruct")
    cfg.generate.instruction.pre_query = "no_system"
    result = Preflight()
    check_generator(cfg, result)
    assert "generate.instruction.pre_query=no_system: '<|im_start|>user\\n'" in result.checks
    cfg.generate.instruction.pre_query = "template"  # the same text as its own: still valid
    check_generator(cfg, Preflight())
    oss = Config()
    oss.model.path = str(CACHE / "models" / "smollm2-135m-instruct")
    oss.model.family = "llama3"  # no match: the family check fails first, with a hint
    with pytest.raises(ConfigError, match="set model.family=smollm2"):
        check_generator(oss, Preflight())
