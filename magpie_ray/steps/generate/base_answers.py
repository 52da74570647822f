"""Base-model answers: a base (non-chat) model answers each instruction in context.

The paper's reward difference compares an instruction's reward with the reward of a base
model's answer (r* - r_base). A base model has no chat template, so it is prompted URIAL-style:
a preamble and a few fenced query/answer examples (`magpie_ray/examples/urial.yaml`, or a user's
file with the same keys), then the new query and an open answer fence. The answer ends at the
next "# Query:" heading the model starts to write; the closing fence is removed.

`render_prompt` and `clean_answer` are pure; `BaseAnswerer` wraps an engine (the generate step
runs one beside the chat model's, in the same actor). Writes nothing itself: the generate step
stores `base_output`, `base_generator` and `base_finish_reason` (`prompt_too_long` when the
instruction leaves no room for an answer, with `base_output` null).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import yaml

from ...engines.base import Completion, Engine, SamplingSpec
from ...engines.tokens import encode_document

BUILTIN_EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "urial.yaml"
QUERY_HEADING = "# Query:"
ANSWER_HEADING = "# Answer:"
FENCE = "```"
# A base model that keeps going writes the next query (or a stray answer heading).
STOP_STRINGS = (QUERY_HEADING, ANSWER_HEADING)


class ExamplesError(ValueError):
    """An in-context examples file is missing or malformed."""


@dataclass(frozen=True)
class Examples:
    preamble: str
    pairs: tuple[tuple[str, str], ...]  # (query, answer)


def load_examples(path: str | Path | None = None) -> Examples:
    """The examples file at `path` (default: the package's own), checked for shape."""
    path = Path(path).expanduser() if path else BUILTIN_EXAMPLES
    if not path.is_file():
        raise ExamplesError(f"base-model examples file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    ok = (
        isinstance(data, dict)
        and isinstance(data.get("preamble"), str)
        and isinstance(data.get("examples"), list)
        and data["examples"]
        and all(
            isinstance(e, dict)
            and isinstance(e.get("query"), str)
            and isinstance(e.get("answer"), str)
            and e["query"].strip()
            and e["answer"].strip()
            for e in data["examples"]
        )
    )
    if not ok:
        raise ExamplesError(
            f"{path}: expected `preamble: text` and `examples: [{{query: text, answer: text}},"
            " ...]` with at least one non-empty example"
        )
    return Examples(
        preamble=data["preamble"].strip(),
        pairs=tuple((e["query"].strip(), e["answer"].strip()) for e in data["examples"]),
    )


def _block(heading: str, body: str) -> str:
    return f"{heading}\n{FENCE}\n{body}\n{FENCE}\n\n"


def render_prompt(examples: Examples, instruction: str) -> str:
    """Preamble, the examples, the instruction, and an open answer fence for the model."""
    shots = "".join(_block(QUERY_HEADING, q) + _block(ANSWER_HEADING, a) for q, a in examples.pairs)
    return (
        f"{examples.preamble}\n\n{shots}{_block(QUERY_HEADING, instruction.strip())}"
        f"{ANSWER_HEADING}\n{FENCE}\n"
    )


def clean_answer(text: str) -> str:
    """The answer without the closing fence (and anything after it) the model wrote."""
    text = text.rstrip()
    # The last fence closes the answer block; fences inside the answer come in pairs.
    if text.count(FENCE) % 2 == 1:
        text = text[: text.rindex(FENCE)]
    return text.strip()


class BaseAnswerer:
    """Submits instructions to a base model's engine; `submit` returns a Future[Completion]
    whose text is already cleaned."""

    def __init__(
        self, engine: Engine, name: str, examples: Examples, spec: SamplingSpec, max_model_len: int
    ):
        self.engine, self.name, self.examples = engine, name, examples
        self.spec, self.max_model_len = spec, max_model_len

    def submit(self, instruction: str, seed: int | None = None) -> Future:
        prompt = encode_document(self.engine.tokenizer, render_prompt(self.examples, instruction))
        room = self.max_model_len - len(prompt)
        result: Future = Future()
        if room < 1:
            result.set_result(Completion("", len(prompt), 0, "prompt_too_long"))
            return result
        spec = SamplingSpec(
            temperature=self.spec.temperature,
            top_p=self.spec.top_p,
            max_tokens=min(self.spec.max_tokens, room),
            seed=seed,
            stop=STOP_STRINGS,
        )
        raw = self.engine.submit(prompt, spec)
        raw.add_done_callback(lambda done: _resolve(result, done))
        return result


def _resolve(result: Future, done: Future) -> None:
    error = done.exception()
    if error is not None:
        result.set_exception(error)
        return
    completion = done.result()
    result.set_result(
        Completion(
            text=clean_answer(completion.text),
            num_prompt_tokens=completion.num_prompt_tokens,
            num_output_tokens=completion.num_output_tokens,
            finish_reason=completion.finish_reason,
            token_ids=completion.token_ids,
        )
    )
