"""Reasoning models' responses split into reasoning and answer: think markers and gpt-oss's
harmony channels (rendered and parsed by openai-harmony, offline)."""

import datetime

import pytest

from magpie_ray.families import harmony
from magpie_ray.families.reasoning import Reasoned, split_reasoning


@pytest.mark.parametrize(
    "text, opened, expected",
    [
        # Qwen3 thinking on: the model opens and closes the block itself
        (
            "<think>\nWeigh it.\n</think>\n\nThe answer.",
            False,
            Reasoned("The answer.", "Weigh it."),
        ),
        # thinking off: the template prefilled an empty block, the text is the answer
        ("Just the answer.", False, Reasoned("Just the answer.", None)),
        # DeepSeek-R1: the generation prompt opened the block
        ("Weigh it.\n</think>\n\nThe answer.", True, Reasoned("The answer.", "Weigh it.")),
        # max_tokens while reasoning: no answer, kept as unclosed
        ("<think>\nWeigh it and", False, Reasoned("", "Weigh it and", closed=False)),
        ("Weigh it and", True, Reasoned("", "Weigh it and", closed=False)),
        # a closing marker without the opening one (a template that prefilled "<think>")
        ("Weigh it.</think>The answer.", False, Reasoned("The answer.", "Weigh it.")),
        # an empty reasoning block is a reasoning of "" (the mode was on), not None
        ("<think>\n\n</think>\n\nHi.", False, Reasoned("Hi.", "")),
    ],
)
def test_split_reasoning(text, opened, expected):
    assert split_reasoning(text, "<think>", "</think>", opened) == expected


DAY = datetime.date(2026, 11, 29)


def test_harmony_prompts_come_from_openai_harmony():
    pre_query = harmony.decode(harmony.pre_query_ids("low", DAY, "You teach chemistry."))
    assert pre_query.startswith("<|start|>system<|message|>You are ChatGPT")
    assert "Current date: 2026-11-29" in pre_query and "Reasoning: low" in pre_query
    assert "<|start|>developer<|message|># Instructions\n\nYou teach chemistry.<|end|>" in pre_query
    assert pre_query.endswith("<|start|>user<|message|>")

    history = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    prompt = harmony.decode(harmony.response_prompt_ids(history[:1], "high", DAY))
    assert prompt.endswith("<|start|>user<|message|>Q1<|end|><|start|>assistant")
    follow_up = harmony.decode(harmony.follow_up_prompt_ids(history, "high", DAY, None))
    # an earlier answer is its final message only, and the next user turn is open
    assert follow_up.endswith(
        "<|start|>assistant<|channel|>final<|message|>A1<|end|><|start|>user<|message|>"
    )
    ids = harmony.encoding().encode("<|return|><|call|><|end|>", allowed_special="all")
    assert sorted(harmony.response_stop_ids()) == sorted(ids[:2]), "end at <|return|>, <|call|>"


def _completion(text: str) -> list[int]:
    return harmony.encoding().encode(text, allowed_special="all")


def test_harmony_answers_are_the_final_channel():
    done = _completion(
        "<|channel|>analysis<|message|>Check units.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>42 m/s<|return|>"
    )
    assert harmony.parse_response(done) == Reasoned("42 m/s", "Check units.")
    cut = _completion("<|channel|>analysis<|message|>Check units and then")
    assert harmony.parse_response(cut) == Reasoned("", "Check units and then", closed=False)
    plain = _completion("<|channel|>final<|message|>No reasoning.<|return|>")
    assert harmony.parse_response(plain) == Reasoned("No reasoning.", None)
