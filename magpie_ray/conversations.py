"""Conversation formats, converted both ways: the released datasets' turns
(`{"from": "human" | "gpt" | "system", "value"}`) and chat messages
(`{"role": "user" | "assistant" | "system", "content"}`) that chat templates, trainers and
reward models take. Pure; imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ROLE_OF = {"human": "user", "gpt": "assistant", "system": "system"}
FROM_OF = {role: source for source, role in ROLE_OF.items()}


def to_messages(turns: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """Released-dataset turns as chat messages."""
    return [{"role": ROLE_OF[t["from"]], "content": t["value"]} for t in turns]


def to_turns(messages: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """Chat messages as released-dataset turns."""
    return [{"from": FROM_OF[m["role"]], "value": m["content"]} for m in messages]


def pair_messages(instruction: str, response: str) -> list[dict[str, str]]:
    """One exchange as chat messages."""
    return [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": response},
    ]


def row_turns(row: Mapping) -> list[dict[str, str]]:
    """A row's conversation as turns: `conversations` when set, else instruction / response."""
    if row.get("conversations"):
        return [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]
    return to_turns(pair_messages(row["instruction"], row["response"]))
