"""Filter recipes on small hand-made tables: every preset, nulls, ordinals, top-k, reasons."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from omegaconf import OmegaConf

from magpie_ray.config import Condition, ConfigError, FilterConfig
from magpie_ray.selection import BELOW_TOP_K, TRUNCATED, filter_problems, select_rows

PRESETS = Path(__file__).resolve().parents[2] / "conf" / "filter"


def preset(name: str, **changes) -> FilterConfig:
    merged = OmegaConf.merge(
        OmegaConf.structured(FilterConfig), OmegaConf.load(PRESETS / f"{name}.yaml")
    )
    return replace(OmegaConf.to_object(merged), **changes)


# A row that passes every preset; each test row changes one or two fields.
GOOD = {
    "instruction": "Explain B-trees.",
    "response_length": 100,
    "response_finish_reason": "stop",
    "input_quality": "good",
    "difficulty": "medium",
    "instruct_reward": 1.0,
    "reward_difference": 0.5,
    "is_canonical": True,
    "min_neighbor_distance": 0.3,
}


def table(rows: dict[str, dict]) -> pa.Table:
    records = []
    for uuid, changes in rows.items():
        record = {"uuid": uuid, **GOOD, **changes}
        record["response"] = "x" * (record["response_length"] or 7)
        records.append(record)
    schema = pa.schema(
        [
            ("uuid", pa.string()),
            ("instruction", pa.string()),
            ("response", pa.string()),
            ("response_length", pa.int64()),
            ("response_finish_reason", pa.string()),
            ("input_quality", pa.string()),
            ("difficulty", pa.string()),
            ("instruct_reward", pa.float64()),
            ("reward_difference", pa.float64()),
            ("is_canonical", pa.bool_()),
            ("min_neighbor_distance", pa.float32()),
        ]
    )
    return pa.Table.from_pylist(records, schema=schema)


def outcome(tbl: pa.Table, recipe: FilterConfig) -> dict[str, str | None]:
    sel = select_rows(tbl, recipe)
    assert sel.num_kept + sum(sel.drop_counts().values()) == tbl.num_rows, "one fate per row"
    return dict(zip(tbl.column("uuid").to_pylist(), sel.reasons, strict=True))


def test_released_filter_drops_each_failure_with_its_reason():
    tbl = table(
        {
            "ok": {},
            "average": {"input_quality": "average"},
            "excellent": {"input_quality": "excellent"},
            "low-reward": {"instruct_reward": -10.0},
            "colon": {"instruction": "Complete the following: "},
            "dup": {"is_canonical": False},
            "untagged": {"input_quality": None},
            "no-reward": {"instruct_reward": float("nan")},
            "no-dedup": {"is_canonical": None},
            "cut-off": {"response_finish_reason": "length", "response_length": 9999},
        }
    )
    assert outcome(tbl, preset("released")) == {
        "ok": None,
        "average": "input_quality >= good",
        "excellent": None,
        "low-reward": "instruct_reward > -10",
        "colon": "instruction not endswith :",
        "dup": "is_canonical == True",
        "untagged": "input_quality is null",
        "no-reward": "instruct_reward is null",
        "no-dedup": "is_canonical is null",
        "cut-off": TRUNCATED,
    }


def test_air_compares_labels_by_rank_and_needs_reward_difference():
    tbl = table(
        {
            "medium": {},
            "very-hard": {"difficulty": "very hard"},
            "easy": {"difficulty": "easy"},
            "poor": {"input_quality": "poor"},
            "typo": {"difficulty": "medum"},
            "no-base": {"reward_difference": None},
            "worse-than-base": {"reward_difference": 0.0},
        }
    )
    assert outcome(tbl, preset("air")) == {
        "medium": None,
        "very-hard": None,
        "easy": "difficulty >= medium",
        "poor": "input_quality >= good",
        "typo": "difficulty unknown label",
        "no-base": "reward_difference is null",
        "worse-than-base": "reward_difference > 0",
    }


CASES = {
    "plain": {},
    "average-easy": {"input_quality": "average", "difficulty": "easy"},
    "good-very-easy": {"difficulty": "very easy"},
    "poor": {"input_quality": "poor"},
    "reward-11": {"instruct_reward": -11.0, "reward_difference": -1.0},
    "reward-13": {"instruct_reward": -13.0},
    "dup": {"is_canonical": False},
}


@pytest.mark.parametrize(
    "name, kept",
    [
        ("pro-1", {"plain", "average-easy", "good-very-easy", "reward-11"}),
        ("pro-2", {"plain", "reward-11"}),
        ("pro-3", {"plain", "average-easy", "good-very-easy", "poor", "reward-11"}),
        ("pro-4", {"plain", "reward-13"}),
        ("pro-5", {"plain", "reward-11"}),
    ],
)
def test_pro_presets_keep_what_table_5_says(name, kept):
    reasons = outcome(table(CASES), preset(name))
    assert {u for u, r in reasons.items() if r is None} == kept


def test_pro_6_splits_top_k_between_easy_and_harder():
    rows = {f"e{i}": {"difficulty": "easy", "response_length": 10 + i} for i in range(4)}
    rows |= {f"h{i}": {"difficulty": "hard", "response_length": 100 + i} for i in range(4)}
    rows |= {"v": {"difficulty": "very easy", "response_length": 5}, "n": {"difficulty": None}}
    reasons = outcome(table(rows), preset("pro-6", top_k=4))
    assert {u for u, r in reasons.items() if r is None} == {"e2", "e3", "h2", "h3"}
    assert reasons["e0"] == reasons["v"] == reasons["h1"] == BELOW_TOP_K
    assert reasons["n"] == "difficulty is null"


def test_top_k_is_last_skips_truncated_and_ignores_row_order():
    rows = {f"r{i}": {"response_length": length} for i, length in enumerate([5, 50, 50, 40, 7])}
    rows["long-but-cut"] = {"response_length": 1000, "response_finish_reason": "length"}
    rows["long-but-poor"] = {"response_length": 900, "input_quality": "poor"}
    recipe = preset("released", top_k=3)
    reasons = outcome(table(rows), recipe)
    assert {u for u, r in reasons.items() if r is None} == {"r1", "r2", "r3"}
    assert reasons["long-but-cut"] == TRUNCATED
    assert reasons["long-but-poor"] == "input_quality >= good"
    tied = table({"b": {}, "a": {}, "c": {}})  # equal lengths: the smallest uuids win
    for order in ([0, 1, 2], [2, 0, 1]):
        reasons = outcome(tied.take(order), replace(recipe, top_k=2))
        assert {u for u, r in reasons.items() if r is None} == {"a", "b"}
    kept_truncated = outcome(table(rows), replace(recipe, exclude_truncated=False))
    assert kept_truncated["long-but-cut"] is None


def test_response_length_falls_back_to_the_response_text():
    tbl = table({"short": {"response_length": 3}, "long": {"response_length": 30}})
    tbl = tbl.set_column(3, "response_length", pa.nulls(2, pa.int64()))
    reasons = outcome(tbl, preset("released", top_k=1))
    assert reasons == {"short": BELOW_TOP_K, "long": None}


def test_user_conditions_on_any_tag_and_columns_the_data_lacks():
    recipe = FilterConfig(
        conditions=[
            Condition("min_neighbor_distance", ">", 0.1),
            Condition("task_category", "in", ["Math", "Coding & Debugging"]),
        ]
    )
    tbl = table({"near": {"min_neighbor_distance": 0.05}, "far": {}})
    sel = select_rows(tbl, recipe)
    assert sel.reasons == ["min_neighbor_distance > 0.1", "task_category is null"]
    assert sel.details[0].startswith("0.05")
    assert sel.missing_columns == ["task_category"]
    tbl = tbl.append_column("task_category", pa.array(["Math", "Others"]))
    assert select_rows(tbl, recipe).kept.tolist() == [False, False]
    assert np.array_equal(select_rows(tbl, FilterConfig()).kept, [True, True])


def test_a_value_of_the_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="instruct_reward is double"):
        select_rows(
            table({"a": {}}), FilterConfig(conditions=[Condition("instruct_reward", ">", "high")])
        )


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_is_valid_and_says_what_it_keeps(path):
    recipe = preset(path.stem)
    assert filter_problems(recipe) == []
    assert recipe.name == path.stem and recipe.description.startswith("kept = ")


def test_bad_recipes_name_the_fix():
    bad = FilterConfig(
        conditions=[Condition("difficulty", ">=", "medum"), Condition("x", "~", 1)],
        top_k=0,
        balance_column="difficulty",
    )
    problems = "\n".join(filter_problems(bad))
    for needle in ("labels are", "unknown op", "top_k=0", "balance_groups"):
        assert needle in problems


def test_contains_and_not_contains_match_substrings_case_sensitively():
    """The reference's reasoning check looks for "## Step 1" in the raw instruction."""
    tbl = table(
        {
            "steps": {"instruction": "Solve x+1=2.\n## Step 1: subtract"},
            "plain": {"instruction": "Solve x+1=2."},
            "lower": {"instruction": "solve it.\n## step 1: subtract"},
        }
    )
    keep_steps = FilterConfig(conditions=[Condition("instruction", "contains", "## Step 1")])
    assert outcome(tbl, keep_steps) == {
        "steps": None,
        "plain": "instruction contains ## Step 1",
        "lower": "instruction contains ## Step 1",
    }
    drop_steps = FilterConfig(conditions=[Condition("instruction", "not_contains", "## Step 1")])
    assert outcome(tbl, drop_steps) == {
        "steps": "instruction not contains ## Step 1",
        "plain": None,
        "lower": None,
    }
    assert (
        "needs a string value"
        in filter_problems(FilterConfig(conditions=[Condition("instruction", "contains", 1)]))[0]
    )


def test_line_break_limit_spares_the_exempt_category_and_rejects_bad_values():
    many = "Step one\n" * 6
    rows = {
        "short": {"instruction": "a\nb", "task_category": "Math"},
        "long": {"instruction": many, "task_category": "Math"},
        "long-code": {"instruction": many, "task_category": "Coding & Debugging"},
        "four": {"instruction": "a\nb\nc\nd\ne", "task_category": None},
        "five": {"instruction": "a\nb\nc\nd\ne\nf", "task_category": None},
    }
    tbl = pa.Table.from_pylist([{"uuid": u, "response": "x", **r} for u, r in rows.items()])
    rule = Condition("instruction", "newlines_lt", 5)
    rule.unless_column, rule.unless_in = "task_category", ["Coding & Debugging"]
    reason = "instruction newlines < 5 unless task_category in [Coding & Debugging]"
    assert outcome(tbl, FilterConfig(conditions=[rule])) == {
        "short": None,
        "long": reason,
        "long-code": None,
        "four": None,
        "five": reason,
    }
    strict = FilterConfig(conditions=[Condition("instruction", "newlines_lt", 5)])
    assert outcome(tbl, strict)["long-code"] == "instruction newlines < 5"

    problems = filter_problems(
        FilterConfig(
            conditions=[
                Condition("instruction", "newlines_lt", "5"),
                Condition("instruction", "newlines_lt", 5, unless_column="task_category"),
            ]
        )
    )
    assert "needs a whole number" in problems[0]
    assert "unless_column and unless_in go together" in problems[1]


CARD_ROW = {
    **GOOD,
    "input_quality": "average",
    "instruct_reward": -10.0,
    "language": "ZH",
    "task_category": "Math",
}


@pytest.mark.parametrize(
    ("name", "top_k", "kept", "dropped"),
    [
        # Pro-300K: average quality and a reward of exactly -10 pass; a ':' ending does not.
        ("card-magpie-pro-300k-filtered", 300_000, {}, {"instruction": "List these:"}),
        # Air-300K: needs good quality and medium difficulty on top.
        (
            "card-magpie-air-300k-filtered",
            300_000,
            {"input_quality": "good"},
            {"difficulty": "easy"},
        ),
        # Llama-3.3-Pro-500K: five line breaks fail unless the row is coding.
        (
            "card-magpie-llama-3.3-pro-500k-filtered",
            500_000,
            {
                "input_quality": "good",
                "instruction": "1\n2\n3\n4\n5\n6",
                "task_category": "Coding & Debugging",
            },
            {"task_category": "Math"},
        ),
        # Qwen2-Pro-200K-Chinese: Chinese instructions only.
        ("card-magpie-qwen2-pro-200k-chinese", 200_000, {}, {"language": "EN"}),
    ],
)
def test_data_card_presets_keep_and_drop_what_their_cards_say(name, top_k, kept, dropped):
    recipe = preset(name)
    assert recipe.name == name and recipe.top_k == top_k and not filter_problems(recipe)
    rows = [
        {"uuid": "kept", **CARD_ROW, **kept},
        {"uuid": "dropped", **CARD_ROW, **kept, **dropped},
        {"uuid": "low-reward", **CARD_ROW, **kept, "instruct_reward": -10.5},
        {"uuid": "duplicate", **CARD_ROW, **kept, "is_canonical": False},
    ]
    for row in rows:
        row["response"] = "x" * row["response_length"]
    result = outcome(pa.Table.from_pylist(rows), recipe)
    assert result["kept"] is None
    assert result["dropped"] is not None
    assert result["low-reward"] == "instruct_reward >= -10"
    assert result["duplicate"] == "is_canonical == True"


def test_share_cap_on_known_label_counts():
    from magpie_ray.selection import share_cap

    assert share_cap(np.array([90, 10]), 0.5, None) == 10  # 10 + 10: each half
    assert share_cap(np.array([5, 5, 5]), 0.34, None) == 5  # three labels under 34% each
    assert share_cap(np.array([100]), 0.5, None) == 0  # one label can never be half
    assert share_cap(np.array([50, 50, 50, 50]), 0.25, 40) == 10  # a quarter of the top-k
    assert share_cap(np.array([6, 2, 1]), 0.5, None) == 3  # 3 + 2 + 1: Math at half


def test_balance_by_caps_a_label_before_the_top_k_with_its_longest_kept():
    math = {f"m{i}": {"response_length": 10 * (i + 1), "task_category": "Math"} for i in range(6)}
    code = {f"c{i}": {"response_length": 5, "task_category": "Coding"} for i in range(2)}
    rows = table({**math, **code})
    rows = rows.append_column(
        "task_category",
        pa.array([r.get("task_category") for r in [*math.values(), *code.values()]]),
    )
    recipe = FilterConfig(balance_by="task_category", max_share=0.5)
    fates = outcome(rows, recipe)
    kept = sorted(u for u, reason in fates.items() if reason is None)
    assert kept == ["c0", "c1", "m4", "m5"]  # Math at its cap of 2: its two longest
    dropped = [u for u, reason in fates.items() if reason == "task_category over max_share"]
    assert sorted(dropped) == ["m0", "m1", "m2", "m3"]
    details = select_rows(rows, recipe).details
    assert {d for d in details if d is not None} == {"Math"}
    # with a top-k of 2 the cap is half of 2: each label's longest (c0 wins c1's tie by uuid)
    fates = outcome(rows, replace(recipe, top_k=2))
    assert sorted(u for u, r in fates.items() if r is None) == ["c0", "m5"]
    assert fates["m4"] == fates["c1"] == "task_category over max_share"


def test_balance_by_needs_a_share_in_range():
    problems = filter_problems(FilterConfig(balance_by="task_category"))
    assert any("go together" in p for p in problems)
    assert any("(0, 1]" in p for p in filter_problems(FilterConfig(balance_by="x", max_share=1.5)))
    assert filter_problems(FilterConfig(balance_by="difficulty", max_share=0.3)) == []
