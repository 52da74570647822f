"""Instruction sanitizer: strip the scaffolding models put around a sampled instruction.

Aligned models given a bare pre-query often write more than a user would: a label ("Question:",
"**Task**", "## Instruction:"), a list number ("1. "), a markdown header, quotes around the
whole text, or the start of an answer after the question ("Answer: 4", "Solution:", "## Step 1").
`sanitize_instruction` removes these and names every rule that changed the text, so a dataset
records what was done to each row (`gen_input_configs.sanitizer_rules`; the untouched text stays
in `raw_instruction`).

Contract: a pure function of one string; rules only delete text at the start (labels, numbers,
headers, quotes) or from a leaked-answer marker to the end, never rewrite words in between; an
instruction with nothing left becomes "" (the generate step then drops it as
`instruction_empty`). Markers are matched case-sensitively and only where a new line or a new
sentence starts, so ordinary text such as "give a one-word answer: yes or no" is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words models use to label the instruction they are about to write.
_LABELS = (
    r"(?:User(?:'s)?\s+)?(?:Question|Instruction|Task|Query|Prompt|Request|Problem|Exercise)"
    r"(?:\s*#?\d+)?|User|Q"
)
# "**Task**", "**Task:**", "__Question__:", "### Instruction" on its own line; "Question 3:", "Q:".
_LABEL = re.compile(
    rf"^\s*(?:#{{1,6}}\s*)?(?:(\*\*|__)\s*(?:{_LABELS})\s*(?:\1\s*:?|:\s*\1)"
    rf"|(?:{_LABELS})\s*:)\s*"
    rf"|^\s*#{{1,6}}\s*(?:{_LABELS})\s*:?[ \t]*\n\s*"
)
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.)]|#\d{1,3}:?|[-*•])\s+(?=\S)")
_HEADER = re.compile(r"^\s*#{1,6}\s+(?=\S)")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}
# Where an answer starts: a marker at a new line, or after a sentence's end.
_ANSWER = re.compile(
    r"(?:^|\n|(?<=[.?!:)\]\"'”’])[ \t]+)"
    r"(?:#{1,6}\s*|\*\*|__)?"
    r"(?:(?:Answer|Solution|Response|Explanation|Assistant)\b\s*(?:\*\*|__)?\s*:"
    r"|(?:Answer|Solution)\s*(?:\*\*|__)(?=\s)"
    r"|Step\s*1\b(?=\s*[:.)*#-]|\s*\n|\s*$)"
    r"|A:(?=\s))",
)


@dataclass(frozen=True)
class Sanitized:
    text: str
    rules: tuple[str, ...]  # names of the rules that changed the text, in the order they fired


def strip_label(text: str) -> str:
    """'Question: How ...' / '**Task:** Write ...' / '## Instruction: ...' -> the text after it."""
    match = _LABEL.match(text)
    return text[match.end() :] if match and text[match.end() :].strip() else text


def strip_numbering(text: str) -> str:
    """'1. Write ...' / '2) ...' / '#3: ...' / '- ...' -> the text after the list marker."""
    return _NUMBERING.sub("", text, count=1)


def strip_header(text: str) -> str:
    """'## How do I ...' -> 'How do I ...' (a markdown header opening the instruction)."""
    return _HEADER.sub("", text, count=1)


def strip_quotes(text: str) -> str:
    """'"Explain X."' -> 'Explain X.' when one pair of quotes wraps the whole instruction."""
    stripped = text.strip()
    close = _QUOTES.get(stripped[:1])
    inner = stripped[1:-1]
    if close and len(stripped) > 2 and stripped.endswith(close) and stripped[0] not in inner:
        return inner
    return text


def cut_leaked_answer(text: str) -> str:
    """'What is 2+2? Answer: 4' -> 'What is 2+2?': drop everything from an answer marker on.

    A marker at the very start is not cut (there would be no instruction left); the label rule
    owns that case.
    """
    for match in _ANSWER.finditer(text):
        if text[: match.start()].strip():
            return text[: match.start()]
    return text


# Prefix rules repeat until none applies ("1. **Question:** ..." needs two); the cut runs last.
PREFIX_RULES = {
    "strip_quotes": strip_quotes,
    "strip_numbering": strip_numbering,
    "strip_label": strip_label,
    "strip_header": strip_header,
}
RULES = (*PREFIX_RULES, "cut_leaked_answer")


def sanitize_instruction(text: str) -> Sanitized:
    fired: list[str] = []
    current = text.strip()
    changed = True
    while changed:
        changed = False
        for name, rule in PREFIX_RULES.items():
            new = rule(current).strip()
            if new != current:
                current, changed = new, True
                if name not in fired:
                    fired.append(name)
    cut = cut_leaked_answer(current).strip()
    if cut != current:
        current = cut
        fired.append("cut_leaked_answer")
        # The cut can expose wrapping quotes: '"Is it safe?" Answer: yes'.
        unquoted = strip_quotes(current).strip()
        if unquoted != current:
            current = unquoted
            if "strip_quotes" not in fired:
                fired.append("strip_quotes")
    return Sanitized(text=current, rules=tuple(fired))
