"""Reasoning models' responses: the reasoning and the final answer, split apart. Pure.

A thinking model (Qwen3, DeepSeek-R1 and its distills, SmolLM3) writes its reasoning between
markers (`<think>` ... `</think>`) before the answer; R1's generation prompt already opens the
reasoning, so its response text starts inside it. The answer is what taggers, filters and exports
see; the reasoning goes to its own column. A reasoning that never ends (the response hit
max_tokens) has no answer: `closed` is False and the answer is empty.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reasoned:
    answer: str
    reasoning: str | None  # None: the response holds no reasoning
    closed: bool = True  # False: the reasoning never ended, so there is no answer


def split_reasoning(text: str, start: str, end: str, opened_by_prompt: bool = False) -> Reasoned:
    """`text` as reasoning and answer; `opened_by_prompt`: the prompt ended with `start`."""
    body = text.lstrip()
    if body.startswith(start):
        body = body[len(start) :]
    elif not opened_by_prompt and end not in body:
        return Reasoned(answer=text.strip(), reasoning=None)
    reasoning, found, answer = body.partition(end)
    if not found:
        return Reasoned(answer="", reasoning=reasoning.strip(), closed=False)
    return Reasoned(answer=answer.strip(), reasoning=reasoning.strip())
