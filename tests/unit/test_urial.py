"""URIAL-style prompts for base-model answers: rendering, cleaning, examples files."""

import pytest

from magpie_ray.urial import (
    Examples,
    ExamplesError,
    clean_answer,
    load_examples,
    render_prompt,
)


def test_shipped_examples_load():
    examples = load_examples()
    assert len(examples.pairs) >= 3
    assert examples.preamble.startswith("# Instruction")
    assert all(q and a for q, a in examples.pairs)


def test_prompt_ends_with_the_query_and_an_open_answer_fence():
    examples = Examples(preamble="# Instruction\n\nBe helpful.", pairs=(("Hi?", "Hello."),))
    prompt = render_prompt(examples, "  What is 2 + 2?\n")
    assert prompt == (
        "# Instruction\n\nBe helpful.\n\n"
        "# Query:\n```\nHi?\n```\n\n# Answer:\n```\nHello.\n```\n\n"
        "# Query:\n```\nWhat is 2 + 2?\n```\n\n# Answer:\n```\n"
    )


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Four.\n```\n\n", "Four."),
        (
            "Use this:\n```python\nprint(4)\n```\nDone.\n```\n",
            "Use this:\n```python\nprint(4)\n```\nDone.",
        ),
        ("Use this:\n```python\nprint(4)\n```", "Use this:\n```python\nprint(4)\n```"),
        ("An answer cut by max_tokens", "An answer cut by max_tokens"),
    ],
)
def test_clean_answer_removes_only_the_closing_fence(raw, clean):
    assert clean_answer(raw) == clean


@pytest.mark.parametrize(
    "body",
    [
        "preamble: x\n",
        "preamble: x\nexamples: []\n",
        "preamble: x\nexamples: [{query: q}]\n",
        "- 1\n",
    ],
)
def test_malformed_examples_files_are_rejected(tmp_path, body):
    path = tmp_path / "ex.yaml"
    path.write_text(body)
    with pytest.raises(ExamplesError, match="expected"):
        load_examples(path)
    with pytest.raises(ExamplesError, match="does not exist"):
        load_examples(tmp_path / "missing.yaml")
