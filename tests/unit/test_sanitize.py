"""Instruction sanitizer: each rule on strings of the kind models really write."""

import pytest

from magpie_ray.sanitize import (
    RULES,
    Sanitized,
    cut_leaked_answer,
    sanitize_instruction,
    strip_header,
    strip_label,
    strip_numbering,
    strip_quotes,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "Question: How do vaccines train the immune system?",
            "How do vaccines train the immune system?",
        ),
        ("**Task:** Write a haiku about autumn rain.", "Write a haiku about autumn rain."),
        ("**Task** Write a haiku about autumn rain.", "Write a haiku about autumn rain."),
        ("**Question**: Why is the sky blue?", "Why is the sky blue?"),
        ("## Instruction: Summarize the plot of Hamlet.", "Summarize the plot of Hamlet."),
        ("### Instruction\nSummarize the plot of Hamlet.", "Summarize the plot of Hamlet."),
        ("Q: What is the capital of Peru?", "What is the capital of Peru?"),
        ("Problem 3: Find all real x with x^2 = 2x.", "Find all real x with x^2 = 2x."),
        ("User: can you fix my regex?", "can you fix my regex?"),
        ("__Query__: best way to learn Rust", "best way to learn Rust"),
    ],
)
def test_strip_label(raw, clean):
    assert strip_label(raw) == clean


@pytest.mark.parametrize(
    "text",
    [
        "Questions about the French Revolution keep coming up in class; why did it start?",
        "Task management apps: which one suits a small team?",
        "Question:",  # nothing after the label: leave it, the empty check handles it
        "Queue: how do I implement one in C?",
    ],
)
def test_strip_label_leaves_ordinary_text(text):
    assert strip_label(text) == text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "1. Write a Python function that reverses a list.",
            "Write a Python function that reverses a list.",
        ),
        ("2) Explain recursion to a child.", "Explain recursion to a child."),
        ("(3) Compare TCP and UDP.", "Compare TCP and UDP."),
        ("#4: Plan a three-day trip to Kyoto.", "Plan a three-day trip to Kyoto."),
        ("- How do I center a div?", "How do I center a div?"),
    ],
)
def test_strip_numbering(raw, clean):
    assert strip_numbering(raw) == clean


@pytest.mark.parametrize(
    "text", ["3.14 is pi; how many digits are known?", "2024 was a leap year, right?"]
)
def test_strip_numbering_leaves_numbers_that_start_a_sentence(text):
    assert strip_numbering(text) == text


def test_strip_header():
    assert strip_header("## How do I bake sourdough bread?") == "How do I bake sourdough bread?"
    assert strip_header("#hashtag ideas for a bakery?") == "#hashtag ideas for a bakery?"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            '"Explain the difference between a virus and a bacterium."',
            "Explain the difference between a virus and a bacterium.",
        ),
        ("“What should I pack for a winter hike?”", "What should I pack for a winter hike?"),
    ],
)
def test_strip_quotes(raw, clean):
    assert strip_quotes(raw) == clean


def test_strip_quotes_keeps_inner_quotes():
    text = '"Hello" and "goodbye" in Japanese, please.'
    assert strip_quotes(text) == text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("What is 15% of 80? Answer: 12", "What is 15% of 80?"),
        ("Solve 2x + 3 = 11. Solution: x = 4.", "Solve 2x + 3 = 11."),
        (
            "How many legs does a spider have?\n\nAnswer: Eight.",
            "How many legs does a spider have?\n",
        ),
        (
            "Find the derivative of x^3.\n## Step 1: Apply the power rule",
            "Find the derivative of x^3.",
        ),
        ("Factor x^2 - 9. Step 1: notice a difference of squares.", "Factor x^2 - 9."),
        ("Is coffee bad for you? **Answer:** In moderation, no.", "Is coffee bad for you?"),
        ("Name a prime above 10. A: 11", "Name a prime above 10."),
        ("Tell me a joke. Assistant: Why did the chicken...", "Tell me a joke."),
    ],
)
def test_cut_leaked_answer(raw, clean):
    assert cut_leaked_answer(raw) == clean


@pytest.mark.parametrize(
    "text",
    [
        "Give a one-word answer: is Rust memory safe?",
        "What's the answer: 42 or 43? Explain your reasoning.",
        "Describe step 1 of making bread.",
        "Answer: what does this acronym stand for?",  # at the start: not a leaked answer
        "Write a solution: a function that merges two sorted lists.",
        # Input/Output examples are part of a task, not a leaked answer.
        "Write a function that sums a list. Input: [1, 2, 3]. Output: 6.",
    ],
)
def test_cut_leaked_answer_leaves_ordinary_text(text):
    assert cut_leaked_answer(text) == text


def test_sanitize_chains_rules_and_records_them():
    result = sanitize_instruction('1. **Question:** "What is 7 x 8?" Answer: 56')
    assert result.text == "What is 7 x 8?"
    assert result.rules == ("strip_numbering", "strip_label", "cut_leaked_answer", "strip_quotes")
    assert set(result.rules) <= set(RULES)


def test_sanitize_leaves_a_clean_instruction_alone():
    text = "How can I improve my sleep schedule while working night shifts?"
    assert sanitize_instruction(text) == sanitize_instruction(f"  {text} ")
    assert sanitize_instruction(text).text == text and sanitize_instruction(text).rules == ()


def test_sanitize_keeps_a_lone_label_or_header_but_not_empty_quotes():
    # Rules never delete all the text themselves: a lone label is left for the empty check...
    assert sanitize_instruction("## ").text == "##"
    assert sanitize_instruction("**Question:**").rules == ()
    # ...but quotes around nothing are nothing.
    assert sanitize_instruction('" "') == Sanitized(text="", rules=("strip_quotes",))


# --- the reference's truncation rule (sanitize_reference.py), for parity --------------------

from magpie_ray.sanitize_reference import reference_truncate, variant_for  # noqa: E402


@pytest.mark.parametrize(
    "raw, variant, text, cls",
    [
        ("**Question:** What is 7 x 8? Answer: 56", "llama-3", "What is 7 x 8?", "1"),
        ('"Why is the sky blue?" she asked', "llama-3", "Why is the sky blue?", "2.1"),
        ('"Write a haiku.\nAbout rain."', "llama-3", "Write a haiku.", "2.2"),
        ("Explain tides.\n\n## Step 1: the moon", "llama-3", "Explain tides.", "5"),
        ("Explain tides.\n\n## Step 1: the moon", "gemma-2", "Explain tides.", "6.2"),
        ("What is 2+2?\nThe answer is: 4", "llama-3", "What is 2+2?", "4"),
        ("Sort these:\n# Input\n[3, 1]", "llama-3", "Sort these:", "6.1"),
        ("Sort these:\n[3, 1]", "gemma-2", "Sort these:", "5.3"),
        ("How do tides work? And waves?", "llama-3", "How do tides work?", "99.1"),
        ("1. Write a poem.\nMake it rhyme.", "llama-3", "Write a poem.", "99.2"),
        ("Task: Summarize this text", "gemma-2", "Summarize this text", "6.2"),
    ],
)
def test_reference_truncation_cuts_as_the_reference_by_class(raw, variant, text, cls):
    result = reference_truncate(raw, variant)
    assert (result.text, result.rules) == (text, (f"reference_class_{cls}",))


def test_reference_rules_follow_the_family():
    assert variant_for("gemma2") == "gemma-2"
    assert variant_for("llama3.3") == variant_for("qwen2.5") == "llama-3"


def test_the_families_whose_scripts_sanitize_use_the_reference_rule_by_default():
    from magpie_ray.families.templates import list_families, load_family

    reference = {n for n in list_families() if load_family(n).sanitizer == "reference"}
    assert reference == {"llama3.1", "llama3.3", "gemma2"}
    assert all(load_family(n).sanitize for n in reference)
