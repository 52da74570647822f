"""The tag step's pure core: judge replies, guard verdicts, preference pairs, column plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from magpie_ray.columns import append_errors, conform, set_columns
from magpie_ray.config import Config, ConfigError
from magpie_ray.conversations import to_messages
from magpie_ray.engines import scorers
from magpie_ray.steps.tagging import drop_done
from magpie_ray.taggers import judge, reward, safety
from magpie_ray.taggers.registry import TAG_FIELDS
from magpie_ray.taggers.text_tags import detect_language
from magpie_ray.validation import validate_static


# --- judge -----------------------------------------------------------------------------------
def test_difficulty_reply_parses_with_chatter_and_code_fences():
    text = (
        "Sure! Here is my rating:\n```json\n"
        '{"intent": "The user wants to sort a list.", "knowledge": "Python lists",'
        ' "difficulty": "Very Easy"}\n```'
    )
    parsed = judge.parse_reply("difficulty", text)
    assert parsed.errors == []
    assert parsed.tags == {
        "intent": "The user wants to sort a list.",
        "knowledge": "Python lists",
        "difficulty": "very easy",
    }


def test_label_outside_the_set_is_null_with_reason_never_others():
    parsed = judge.parse_reply(
        "classification", '{"primary_tag": "Cooking", "other_tags": ["Math", "Poetry"]}'
    )
    assert parsed.tags["task_category"] is None
    assert parsed.tags["other_task_category"] == ["Math"]
    reasons = dict(parsed.errors)
    assert "Cooking" in reasons["task_category"]
    assert "Poetry" in reasons["other_task_category"]


def test_category_spelling_variants_map_to_the_exact_label():
    parsed = judge.parse_reply(
        "classification",
        '{"primary_tag": "coding and debugging", "other_tags": ["data analysis", '
        '"Coding & Debugging"]}',
    )
    assert parsed.tags["task_category"] == "Coding & Debugging"
    # the primary tag is not repeated among the others
    assert parsed.tags["other_task_category"] == ["Data analysis"]
    assert parsed.errors == []


@pytest.mark.parametrize(
    "text, reason",
    [
        ("I think the quality is good.", "no JSON object"),
        ('{"explanation": "clear"}', "missing"),
        ('{"explanation": "clear", "input_quality": 4}', "not a string"),
        ('{"explanation": "clear", "input_quality": "superb"}', "outside the set"),
    ],
)
def test_malformed_quality_replies_give_null_and_a_reason(text, reason):
    parsed = judge.parse_reply("quality", text)
    assert parsed.tags["input_quality"] is None
    assert len(parsed.errors) == 1 and reason in parsed.errors[0][1]


def test_json_schemas_enumerate_exactly_the_reference_label_sets():
    schemas = {k: json.loads(v) for k, v in judge.json_schemas().items()}
    assert schemas["difficulty"]["properties"]["difficulty"]["enum"] == [
        "very easy",
        "easy",
        "medium",
        "hard",
        "very hard",
    ]
    assert schemas["quality"]["properties"]["input_quality"]["enum"] == [
        "very poor",
        "poor",
        "average",
        "good",
        "excellent",
    ]
    categories = schemas["classification"]["properties"]["primary_tag"]["enum"]
    assert len(categories) == 12 and "Others" in categories and "Coding & Debugging" in categories


def test_judge_prompt_carries_the_instruction_and_every_category():
    prompt = judge.render_prompt("classification", "Translate 'cat' into French.")
    assert "Translate 'cat' into French." in prompt
    assert all(c in prompt for c in judge.TASK_CATEGORIES)
    long = judge.render_prompt("difficulty", "x" * 10_000, max_instruction_chars=100)
    assert "x" * 100 + " [...]" in long and "x" * 101 not in long


# --- guard -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, safety_label, categories",
    [
        ("safe", "safe", []),
        ("\n\nsafe\n", "safe", []),
        ("unsafe\nS1", "unsafe", ["S1"]),
        ("unsafe\nS2,S10", "unsafe", ["S2", "S10"]),
        ("unsafe\ns3, s11", "unsafe", ["S3", "S11"]),
    ],
)
def test_guard_verdicts(text, safety_label, categories):
    verdict = safety.parse_verdict(text)
    assert (verdict.safety, verdict.categories, verdict.error) == (
        safety_label,
        categories,
        None,
    )


@pytest.mark.parametrize("text", ["", "I cannot help with that.", "Safe to say, yes"])
def test_malformed_guard_verdict_is_null_with_reason(text):
    verdict = safety.parse_verdict(text)
    assert verdict.safety is None and verdict.categories is None and verdict.error


def test_unsafe_without_codes_keeps_the_verdict_but_flags_the_categories():
    verdict = safety.parse_verdict("unsafe\nviolence")
    assert verdict.safety == "unsafe" and verdict.categories is None
    assert "categories" in verdict.error


def test_policy_prompt_for_stand_ins_holds_both_turns():
    prompt = safety.policy_prompt("How do I bake bread?", "Mix flour and water.")
    assert "User: How do I bake bread?" in prompt and "Assistant: Mix flour and water." in prompt


# --- reward ----------------------------------------------------------------------------------
def test_preference_pair_takes_highest_and_lowest():
    pair = reward.preference_pair("q", ["a", "b", "c"], [0.5, 2.0, -1.0])
    assert pair.reason is None
    assert pair.chosen == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "b"},
    ]
    assert pair.rejected[1]["content"] == "c"


@pytest.mark.parametrize(
    "responses, rewards, margin, reason",
    [
        (["a", "b"], [1.0, 1.0], 0.0, "tie"),
        (["same", "same"], [1.0, 2.0], 0.0, "tie"),
        (["a", "b"], [1.0, 1.2], 0.5, "margin below 0.5"),
        (["a", "b"], [1.0, None], 0.0, "fewer than two scored responses"),
        (["a"], [1.0], 0.0, "fewer than two scored responses"),
    ],
)
def test_no_preference_pair_says_why(responses, rewards, margin, reason):
    pair = reward.preference_pair("q", responses, rewards, margin)
    assert pair.chosen is None and pair.rejected is None and pair.reason == reason


def test_micro_batches_group_similar_lengths_and_cover_every_index():
    lengths = [50, 3, 40, 4, 41, 5]
    groups = scorers.micro_batches(lengths, 2)
    assert groups == [[1, 3], [5, 2], [4, 0]]
    assert sorted(i for g in groups for i in g) == list(range(6))


def test_micro_batches_keep_padded_tokens_under_the_budget():
    lengths = [10, 10, 10, 10, 30, 30, 100]
    groups = scorers.micro_batches(lengths, 8, max_tokens=60)
    assert groups == [[0, 1, 2, 3], [4, 5], [6]]  # 40, 60 padded tokens; 100 alone
    for group in groups[:-1]:
        assert len(group) * max(lengths[i] for i in group) <= 60


def test_conversations_become_chat_messages():
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    assert to_messages(turns) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


# --- text tags and column plumbing -------------------------------------------------------------
def test_language_is_an_upper_case_iso_code():
    assert detect_language("How do I reverse a linked list in Python?") == "EN"
    assert detect_language("Comment puis-je faire une tarte aux pommes ?") == "FR"
    assert detect_language("请帮我写一首关于秋天的诗") == "ZH"
    assert detect_language("12345 ???") is None


def _table() -> pa.Table:
    return pa.table({"uuid": ["a", "b", "c"], "index": [0, 1, 2], "instruction": ["x", "y", "z"]})


def test_conform_adds_every_tag_column_typed_and_null():
    table = set_columns(_table(), {"safety": ["safe", None, "unsafe"]}, TAG_FIELDS)
    table = conform(table, TAG_FIELDS)
    assert table.column_names[:3] == ["uuid", "index", "instruction"]
    assert table.column_names[3:] == list(TAG_FIELDS)
    for name, dtype in TAG_FIELDS.items():
        assert table.schema.field(name).type == dtype
    assert table.column("safety").to_pylist() == ["safe", None, "unsafe"]
    assert table.column("instruct_reward").null_count == 3


def test_errors_accumulate_per_row_across_taggers():
    table = append_errors(_table(), [[("safety", "bad")], [], []])
    table = append_errors(table, [[("difficulty", "missing")], [], [("task", "no JSON")]])
    assert table.column("tag_errors").to_pylist() == [
        [{"tag": "safety", "reason": "bad"}, {"tag": "difficulty", "reason": "missing"}],
        [],
        [{"tag": "task", "reason": "no JSON"}],
    ]


def test_drop_done_filters_by_uuid():
    assert drop_done(_table(), frozenset({"b"})).column("uuid").to_pylist() == ["a", "c"]


# --- config ----------------------------------------------------------------------------------
def test_tag_config_errors_name_the_fix(tmp_path):
    cfg = Config(output_dir=str(tmp_path), steps=["tag"])
    cfg.model.path = str(tmp_path)
    cfg.reward.path = str(tmp_path / "missing-rm")
    cfg.guard.engine = "tgi"
    cfg.judge.tasks = ["difficulty", "vibes"]
    cfg.judge.kv_cache_gib = None
    with pytest.raises(ConfigError) as err:
        validate_static(cfg)
    text = str(err.value)
    assert "reward.path=" in text and "does not exist" in text
    assert "guard.engine='tgi'" in text
    assert "judge.tasks" in text
    assert "judge.kv_cache_gib is required on CPU" in text


def test_disabled_taggers_are_not_checked(tmp_path):
    cfg = Config(output_dir=str(tmp_path), steps=["tag"])
    cfg.model.path = str(tmp_path)
    cfg.engine.kv_cache_gib = 1
    cfg.generate.response.max_tokens = 1024
    for key in ("reward", "guard", "judge", "embedder"):
        getattr(cfg, key).enabled = False
    validate_static(cfg)


CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={p.stem}"
        for group in ("reward", "guard", "judge", "embedder")
        for p in sorted((CONF / group).glob("*.yaml"))
    ],
)
def test_every_tagger_option_composes_and_stand_ins_say_so(override):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from magpie_ray.config import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=[override]))
    group, option = override.split("=")
    model = getattr(cfg, group)
    assert model.enabled and model.path and model.name
    if option == "stand_in":
        assert model.recorded_name.startswith("stand-in:")
    elif group != "embedder":
        assert not model.stand_in
