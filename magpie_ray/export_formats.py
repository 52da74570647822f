"""Every export format, once: its file under `<run>/exports/` and how a selected row becomes
one of its records. Adding a format is one entry in `FORMATS`; the config's `ExportFormat`
choices and the writer (`export_writer.py`) read it. A leaf: it imports only `conversations`.

    sharegpt.jsonl  {"uuid", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}
                    Axolotl `type: sharegpt` / chat_template, LLaMA-Factory `formatting: sharegpt`
    messages.jsonl  {"uuid", "messages": [{"role": "user"|"assistant"|"system", "content"}]}
                    TRL SFTTrainer (conversational), OpenAI fine-tuning, Axolotl chat_template
    dpo.jsonl       {"uuid", "prompt": [messages], "chosen": [assistant], "rejected": [assistant]}
                    TRL DPOTrainer's conversational format with an explicit prompt; only rows
                    whose `chosen` and `rejected` are both set (a valid pair)
    data.parquet    the selected rows' columns (`export_writer.py` says which)

Each JSONL format also declares the Arrow schema of its records (what `datasets` loads them
as): the dataset card's features (`dataset_card.py`); data.parquet's are read from the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from .conversations import row_turns, to_messages

if TYPE_CHECKING:
    from .config import ExportConfig


def sharegpt_record(row: dict, cfg: ExportConfig) -> dict:
    return {"uuid": row["uuid"], "conversations": row_turns(row)}


def messages_record(row: dict, cfg: ExportConfig) -> dict:
    """Role/content messages; with `include_reasoning`, each assistant message of a reasoning
    model carries its reasoning as `reasoning_content` (the field chat APIs use)."""
    messages = to_messages(row_turns(row))
    if cfg.include_reasoning:
        reasonings = row.get("turn_response_reasonings") or [row.get("response_reasoning")]
        answers = [m for m in messages if m["role"] == "assistant"]
        for message, reasoning in zip(answers, reasonings, strict=False):
            if reasoning is not None:
                message["reasoning_content"] = reasoning
    return {"uuid": row["uuid"], "messages": messages}


def dpo_record(row: dict, cfg: ExportConfig) -> dict | None:
    """Prompt = the conversation before the final assistant turn; None without a valid pair."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not chosen or not rejected:
        return None
    chosen = [{"role": m["role"], "content": m["content"]} for m in chosen]
    rejected = [{"role": m["role"], "content": m["content"]} for m in rejected]
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    prompt = chosen[:-1] or [{"role": "user", "content": row["instruction"]}]
    return {
        "uuid": row["uuid"],
        "prompt": prompt,
        "chosen": chosen[-1:],
        "rejected": rejected[-1:],
    }


TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
REASONING_MESSAGE = pa.struct([*MESSAGE, ("reasoning_content", pa.string())])


def sharegpt_schema(cfg: ExportConfig) -> pa.Schema:
    return pa.schema([("uuid", pa.string()), ("conversations", pa.list_(TURN))])


def messages_schema(cfg: ExportConfig) -> pa.Schema:
    message = REASONING_MESSAGE if cfg.include_reasoning else MESSAGE
    return pa.schema([("uuid", pa.string()), ("messages", pa.list_(message))])


def dpo_schema(cfg: ExportConfig) -> pa.Schema:
    turns = pa.list_(MESSAGE)
    return pa.schema(
        [("uuid", pa.string()), ("prompt", turns), ("chosen", turns), ("rejected", turns)]
    )


@dataclass(frozen=True)
class Format:
    """An export file: JSON lines of one record per row (None: the row is left out) of the
    declared `schema`, or, with `record` None, the selected table itself as Parquet."""

    file: str
    record: Callable[[dict, ExportConfig], dict | None] | None = None
    schema: Callable[[ExportConfig], pa.Schema] | None = None


FORMATS = {
    "sharegpt": Format("sharegpt.jsonl", sharegpt_record, sharegpt_schema),
    "messages": Format("messages.jsonl", messages_record, messages_schema),
    "dpo": Format("dpo.jsonl", dpo_record, dpo_schema),
    "parquet": Format("data.parquet"),
}
FILES = {name: fmt.file for name, fmt in FORMATS.items()}
