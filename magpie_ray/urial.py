"""URIAL-style prompts for a base (non-chat) model: a preamble and a few fenced query/answer
examples (`magpie_ray/examples/urial.yaml`, or a user's file with the same keys), then the new
query and an open answer fence. Pure: loading and checking an examples file, rendering a prompt,
cleaning an answer. The generate step's `BaseAnswerer` runs them on an engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

BUILTIN_EXAMPLES = Path(__file__).resolve().parent / "examples" / "urial.yaml"
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
