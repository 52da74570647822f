"""The reference's instruction truncation rule, for parity (`instruction.sanitizer=reference`).

The reference (magpie-align/magpie, exp/str_utils.py `instruction_post_process`) sanitizes the
instructions of its Llama-3.x and Gemma-2 scripts by cutting each one down to one question or
one line, chosen by a class of what the text looks like:

    1    opens with "*" and has a "?"        -> up to the first "?", asterisks removed
    2.1  opens with a quote, has a "?"       -> up to the first "?", quotes removed
    2.2  opens with a quote                  -> the first line, quotes and asterisks removed
    3    opens with "<b>"                    -> asterisks removed (the reference's line cut is lost)
    4    an answer marker ("Solution:" ...)  -> the text before it
    5    "# Step 1" (Llama only)             -> the text before it
    6.x  the first line ends with ":"        -> before the first "#", else up to the first "?",
         (Gemma: 5.x)                           else the first line
    99.x anything else (Gemma: 6.x)          -> up to the first "?", else the first line

with a label ("Question:", "**Task**", "Q3:") and a list marker ("1.", "a)") removed before and
after. Our own sanitizer (`sanitize.py`) only deletes scaffolding; this one also drops every
sentence after the first question, which is what the released Llama-3.1/3.3 and Gemma-2 data
went through. Its quirks are kept on purpose (the answer markers only match before a second
colon, "Answer::", or when they have none of their own, "The answer is:"; "**" is dropped only
when it starts at the second character). Written from the reference's description; pure.
"""

from __future__ import annotations

import re

from .sanitize import Sanitized

_WORDS = (
    "Task", "Prompt", "Original Prompt", "Question", "The Problem", "Problem", "Scenario",
    "The senario", "Situation", "The situation", "Context", "Challenge", "Query", "Request",
    "Instructions", "Instruction", "Descriptions", "Description",
)  # fmt: skip
_LABEL = re.compile(
    "^("
    + "|".join(re.escape(f) for w in _WORDS for f in (f"{w}:", f"**{w}**", f"## {w}:"))
    + r"|Question \d+:|Question \d+\.|Part \d+:|Q\d+\.|Q\d+:)\s*",
    re.IGNORECASE,
)
_LIST_MARK = re.compile(r"^(\d+\.|\w+\))\s*")
_MARKERS = (
    "Answer:", "Answers:", "The answer is", "Correct answer", "The correct answer", "Answer is",
    "Explanation:", "Here are some", "Solution Approach:", "Solution:",
)  # fmt: skip
_ANSWER = re.compile("(?:" + "|".join(_MARKERS) + ")s?:")
_STEP = re.compile(r"(?:# Step 1|## Step 1|### Step 1):?")


def _unlabel(text: str) -> str:
    text = _LIST_MARK.sub("", text, count=1).strip()
    match = _LABEL.match(text)
    return text[match.end() :].strip() if match else text


def _unbold(text: str) -> str:
    return text.replace("**", "").strip() if text.find("**") == 1 else text.strip()


def _first_line(text: str, *strip: str) -> str:
    line = text.split("\n")[0]
    for chars in strip:
        line = line.replace(chars, "").strip()
    return line.strip()


def reference_truncate(text: str, variant: str) -> Sanitized:
    """`text` cut as the reference cuts instructions of `variant` ("llama-3" or "gemma-2");
    the rule is named `reference_class_<class>`."""
    llama = variant == "llama-3"
    text = _unlabel(text)
    answer = _ANSWER.search(text)
    step = _STEP.search(text) if llama else None
    if text.startswith("*") and "?" in text:
        return _named(_unlabel(text.split("?")[0].replace("*", "").strip() + "?"), "1")
    text = _unlabel(text)
    if text.startswith('"'):
        if "?" in text:
            text, cls = text.split("?")[0].replace('"', "").strip() + "?", "2.1"
        else:
            text, cls = _first_line(text, '"', "*"), "2.2"
    elif text.startswith("<b>"):
        text, cls = text.replace("*", "").strip(), "3"
    elif answer:
        text, cls = _unbold(text[: answer.start()]), "4"
    elif step:
        text, cls = _unbold(text[: step.start()]), "5"
    elif text.split("\n")[0].strip().endswith(":"):
        base = "6" if llama else "5"
        if "#" in text:
            text, cls = _unbold(text.split("#")[0]), f"{base}.1"
        elif "?" in text:
            text, cls = _unbold(text.split("?")[0].strip() + "?"), f"{base}.2"
        else:
            text, cls = _first_line(text, "*"), f"{base}.3"
    else:
        base = "99" if llama else "6"
        if "?" in text:
            text, cls = _unbold(text.split("?")[0].strip() + "?"), f"{base}.1"
        else:
            text, cls = _first_line(text, "*"), f"{base}.2"
    return _named(_unlabel(text), cls)


def _named(text: str, cls: str) -> Sanitized:
    return Sanitized(text, (f"reference_class_{cls}",))


def variant_for(family_name: str) -> str:
    """The reference's rule set for a family: Gemma's for gemma families, else Llama-3's."""
    return "gemma-2" if family_name.startswith("gemma") else "llama-3"
