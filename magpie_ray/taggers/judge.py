"""Judge tags (unitag): an instruct LLM labels each instruction's difficulty, quality and task.

Reads `instruction`. Writes, per task (the reference implementation's label sets exactly):

- difficulty: `intent`, `knowledge`, `difficulty` (very easy .. very hard), `difficulty_generator`
- quality: `quality_explanation`, `input_quality` (very poor .. excellent), `quality_generator`
- classification: `task_category`, `other_task_category` (list), `task_category_generator`

One greedy request per (row, task), JSON-constrained where the engine supports it (vLLM); the
reply is parsed defensively anyway. A reply that is not JSON, misses a field, or names a label
outside the set gives null tags and a `tag_errors` entry naming the reason: never a crash, and
never a silent "Others". No row is dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pyarrow as pa

from ..columns import append_errors, set_columns
from ..config import JudgeConfig, JudgeTask
from ..engines.base import SamplingSpec
from ..engines.lifecycle import engine_death_exits, load_tagger_engine
from ..engines.tokens import chat_prompt_ids
from ..labels import DIFFICULTY_LABELS, QUALITY_LABELS, TASK_CATEGORIES
from .spec import Tagger, generative_problems

TASKS = tuple(t.value for t in JudgeTask)
COLUMNS = {
    "difficulty": pa.string(),
    "intent": pa.string(),
    "knowledge": pa.string(),
    "difficulty_generator": pa.string(),
    "input_quality": pa.string(),
    "quality_explanation": pa.string(),
    "quality_generator": pa.string(),
    "task_category": pa.string(),
    "other_task_category": pa.list_(pa.string()),
    "task_category_generator": pa.string(),
}
# The column naming the judge model of each task's tags.
GENERATOR_COLUMNS = {
    "difficulty": "difficulty_generator",
    "quality": "quality_generator",
    "classification": "task_category_generator",
}

_DIFFICULTY_PROMPT = """You are rating a user query that was sent to an AI assistant.

# User query
```
{instruction}
```

First say in one sentence what the user wants (intent), then what knowledge is needed to answer \
it (knowledge), then rate how difficult the query is to answer well, with exactly one of: \
very easy, easy, medium, hard, very hard.

Reply with JSON only:
{{"intent": "...", "knowledge": "...", "difficulty": "..."}}"""

_QUALITY_PROMPT = """You are rating the quality of a user query that was sent to an AI assistant.

# User query
```
{instruction}
```

Judge how clear, specific and well-formed the query is: whether it says what is wanted and gives \
the context needed to answer it. Explain your judgement in one or two sentences, then rate the \
quality with exactly one of: very poor, poor, average, good, excellent.

Reply with JSON only:
{{"explanation": "...", "input_quality": "..."}}"""

_CLASSIFICATION_PROMPT = """You are sorting user queries that were sent to an AI assistant.

# User query
```
{instruction}
```

Choose the category that best describes the query (primary_tag) and any other categories that \
also apply (other_tags, possibly empty). Use only these categories:
{categories}

Reply with JSON only:
{{"primary_tag": "...", "other_tags": ["..."]}}"""


def _schema(properties: dict) -> str:
    return json.dumps(
        {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }
    )


def _text(max_chars: int) -> dict:
    return {"type": "string", "maxLength": max_chars}


def json_schemas(max_chars: int = 300) -> dict[str, str]:
    """The JSON schema of each task's reply; labels are enums so constrained decoding obeys."""
    return {
        "difficulty": _schema(
            {
                "intent": _text(max_chars),
                "knowledge": _text(max_chars),
                "difficulty": {"enum": list(DIFFICULTY_LABELS)},
            }
        ),
        "quality": _schema(
            {"explanation": _text(max_chars), "input_quality": {"enum": list(QUALITY_LABELS)}}
        ),
        "classification": _schema(
            {
                "primary_tag": {"enum": list(TASK_CATEGORIES)},
                "other_tags": {
                    "type": "array",
                    "items": {"enum": list(TASK_CATEGORIES)},
                    "maxItems": 3,
                },
            }
        ),
    }


def render_prompt(task: str, instruction: str, max_instruction_chars: int = 4000) -> str:
    """The user message asking the judge for one task's tags."""
    if len(instruction) > max_instruction_chars:
        instruction = instruction[:max_instruction_chars] + " [...]"
    if task == "difficulty":
        return _DIFFICULTY_PROMPT.format(instruction=instruction)
    if task == "quality":
        return _QUALITY_PROMPT.format(instruction=instruction)
    if task == "classification":
        categories = "\n".join(f"- {c}" for c in TASK_CATEGORIES)
        return _CLASSIFICATION_PROMPT.format(instruction=instruction, categories=categories)
    raise ValueError(f"unknown judge task {task!r}; valid: {list(TASKS)}")


@dataclass(frozen=True)
class Parsed:
    """One task's tags (column -> value, None where unparsed) and why any is None."""

    tags: dict
    errors: list[tuple[str, str]]


_EMPTY = {
    "difficulty": {"intent": None, "knowledge": None, "difficulty": None},
    "quality": {"quality_explanation": None, "input_quality": None},
    "classification": {"task_category": None, "other_task_category": None},
}


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in `text`, tolerating code fences and chatter around it."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _canonical(labels: tuple[str, ...]) -> dict[str, str]:
    """Lower-cased, whitespace- and punctuation-tolerant spelling -> the exact label."""
    return {_norm(label): label for label in labels}


def _norm(text: str) -> str:
    text = text.lower().replace("and", "&")
    return re.sub(r"[^a-z&]+", "", text)


_LABELS = {
    "difficulty": _canonical(DIFFICULTY_LABELS),
    "input_quality": _canonical(QUALITY_LABELS),
    "task_category": _canonical(TASK_CATEGORIES),
}


def _label(kind: str, value) -> tuple[str | None, str | None]:
    """(the exact label, None) or (None, reason)."""
    if value is None:
        return None, "missing"
    if not isinstance(value, str):
        return None, f"not a string: {value!r}"[:200]
    label = _LABELS[kind].get(_norm(value))
    if label is None:
        return None, f"label outside the set: {value!r}"[:200]
    return label, None


def _string(value) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_reply(task: str, text: str) -> Parsed:
    """Tags from the judge's reply to `task`; malformed parts become None with a reason."""
    tags = dict(_EMPTY[task])
    obj = extract_json_object(text)
    if obj is None:
        return Parsed(tags, [(task, "no JSON object in the judge's reply")])
    obj = {str(k).strip().lower(): v for k, v in obj.items()}
    errors: list[tuple[str, str]] = []

    def set_label(column: str, key: str) -> None:
        label, reason = _label(column, obj.get(key))
        tags[column] = label
        if reason:
            errors.append((column, reason))

    if task == "difficulty":
        tags["intent"] = _string(obj.get("intent"))
        tags["knowledge"] = _string(obj.get("knowledge"))
        set_label("difficulty", "difficulty")
    elif task == "quality":
        tags["quality_explanation"] = _string(obj.get("explanation"))
        set_label("input_quality", "input_quality")
    elif task == "classification":
        set_label("task_category", "primary_tag")
        others = obj.get("other_tags", [])
        if isinstance(others, str):
            others = [others]
        if not isinstance(others, list):
            errors.append(("other_task_category", f"not a list: {others!r}"[:200]))
            others = []
        kept: list[str] = []
        for value in others:
            label, reason = _label("task_category", value)
            if reason:
                errors.append(("other_task_category", reason))
            elif label not in kept and label != tags["task_category"]:
                kept.append(label)
        tags["other_task_category"] = kept
    else:
        raise ValueError(f"unknown judge task {task!r}; valid: {list(TASKS)}")
    return Parsed(tags, errors)


class JudgeTagger:
    """Ray Data actor: the judge LLM loaded once; `__call__` adds the judge columns to a batch."""

    def __init__(self, config: JudgeConfig, seed: int = 0):
        self.engine, self.engines = load_tagger_engine("judge", config, seed)
        self.model_name = config.recorded_name
        self.tasks = tuple(str(t) for t in config.tasks)
        self.max_tokens = config.max_tokens
        self.schemas = json_schemas()

    def __call__(self, batch):
        # A dead engine takes this actor with it: Ray restarts it and retries the call.
        with engine_death_exits(self.engines):
            return self._tag(batch)

    def _tag(self, batch):
        instructions = batch.column("instruction").to_pylist()
        tokenizer = self.engine.tokenizer
        requests = []
        for task in self.tasks:
            spec = SamplingSpec(
                temperature=0.0,
                max_tokens=self.max_tokens,
                structured=("json", self.schemas[task]),
            )
            for text in instructions:
                message = {"role": "user", "content": render_prompt(task, text)}
                ids = chat_prompt_ids(tokenizer, [message])
                requests.append((task, ids, spec))
        futures = [self.engine.submit(ids, spec) for _, ids, spec in requests]
        values: dict[str, list] = {}
        errors: list[list[tuple[str, str]]] = [[] for _ in instructions]
        n = len(instructions)
        for k, ((task, _, _), future) in enumerate(zip(requests, futures, strict=True)):
            row = k % n
            done = future.result()
            parsed = parse_reply(task, done.text)
            if done.finish_reason == "length" and parsed.errors:
                parsed = Parsed(parsed.tags, [(task, "judge reply hit max_tokens")])
            for column, value in parsed.tags.items():
                values.setdefault(column, [None] * n)[row] = value
            errors[row].extend(parsed.errors)
        for task in self.tasks:
            values[GENERATOR_COLUMNS[task]] = [self.model_name] * n
        return append_errors(set_columns(batch, values, COLUMNS), errors)


def config_problems(config: JudgeConfig, key: str) -> list[str]:
    """The judge's reply length against its context, and its tasks from the known set."""
    problems = generative_problems(config, key)
    unknown = [t for t in config.tasks if t not in list(JudgeTask)]
    if unknown or not config.tasks:
        tasks = [str(t) for t in config.tasks]
        problems.append(f"{key}.tasks={tasks}: choose from {[t.value for t in JudgeTask]}")
    return problems


TAGGER = Tagger(
    name="judge",
    columns=COLUMNS,
    actor=JudgeTagger,
    concurrency=2,
    needs_chat_template=True,
    label_columns=("difficulty", "input_quality", "task_category"),
    model_column="task_category_generator",
    check=config_problems,
)
