"""Export files load with `datasets` and have the fields TRL, Axolotl and LLaMA-Factory read."""

import json

import numpy as np
import pyarrow as pa
import pytest
from datasets import load_dataset

from magpie_ray.config import ExportConfig
from magpie_ray.export_formats import FILES
from magpie_ray.export_writer import write_exports
from magpie_ray.storage import RunStore
from tests.helpers import tagged_rows, tagged_table

ROWS = 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    store = RunStore(str(root / "run"))
    rows = tagged_rows(np.eye(ROWS, 8, dtype=np.float32))
    rows[3]["conversations"] = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "Café?"},
        {"from": "gpt", "value": "Oui."},
    ]
    table = tagged_table(rows[::-1])  # files come out in `index` order regardless
    stats = write_exports(store, table, ExportConfig())
    return root / "run" / "exports", stats, rows


def _load(exports, name, kind="json"):
    return load_dataset(
        kind, data_files=str(exports / name), split="train", cache_dir=str(exports / ".hf")
    )


def test_sharegpt_has_from_value_turns_for_axolotl_and_llama_factory(exported):
    exports, stats, rows = exported
    ds = _load(exports, FILES["sharegpt"])
    assert ds.num_rows == ROWS == stats.files["sharegpt.jsonl"]
    assert ds.column_names == ["uuid", "conversations"]
    assert ds[0]["conversations"] == [
        {"from": "human", "value": rows[0]["instruction"]},
        {"from": "gpt", "value": rows[0]["response"]},
    ]
    multi = ds[3]["conversations"]
    assert [t["from"] for t in multi] == ["system", "human", "gpt", "human", "gpt"]
    assert multi[3]["value"] == "Café?"
    assert ds["uuid"] == [r["uuid"] for r in rows]


def test_messages_have_role_content_for_trl_sft(exported):
    exports, _, rows = exported
    ds = _load(exports, FILES["messages"])
    assert ds.column_names == ["uuid", "messages"]
    for record in ds:
        roles = [m["role"] for m in record["messages"]]
        assert set(roles) <= {"system", "user", "assistant"} and roles[-1] == "assistant"
    assert ds[0]["messages"][1] == {"role": "assistant", "content": rows[0]["response"]}
    assert [m["role"] for m in ds[3]["messages"]][:2] == ["system", "user"]


def test_dpo_has_prompt_chosen_rejected_for_rows_with_a_pair(exported):
    exports, stats, rows = exported
    ds = _load(exports, FILES["dpo"])
    with_pair = [r for r in rows if r["chosen"] is not None]
    assert ds.num_rows == len(with_pair) == stats.files["dpo.jsonl"]
    assert stats.left_out["dpo.jsonl"] == ROWS - len(with_pair)
    assert ds.column_names == ["uuid", "prompt", "chosen", "rejected"]
    first = ds[0]
    assert first["prompt"] == [{"role": "user", "content": with_pair[0]["instruction"]}]
    assert first["chosen"] == [{"role": "assistant", "content": with_pair[0]["response"]}]
    assert first["rejected"] == [{"role": "assistant", "content": "No."}]


def test_parquet_keeps_the_full_schema_but_not_the_embedding(exported):
    exports, _, rows = exported
    ds = _load(exports, FILES["parquet"], kind="parquet")
    expected = set(tagged_table([]).schema.names) - {"embedding"}
    assert set(ds.column_names) == expected
    assert ds.num_rows == ROWS and ds[5]["instruct_reward"] == rows[5]["instruct_reward"]


def test_jsonl_lines_are_plain_json_with_unicode_kept(exported):
    exports, _, _ = exported
    lines = (exports / FILES["sharegpt"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == ROWS and "Café?" in lines[3]
    assert json.loads(lines[0])["conversations"][0]["from"] == "human"


def test_turn_columns_write_the_released_multi_turn_fields(exported, tmp_path):
    """export.turn_columns: instruction_2 / response_2 after `conversations` (gen_mt.py's
    names; turn 1 stays `instruction` / `response`), null for rows with fewer turns."""
    _, _, rows = exported
    store = RunStore(str(tmp_path / "run"))
    write_exports(store, tagged_table(rows), ExportConfig(formats=["parquet"], turn_columns=True))
    ds = _load(tmp_path / "run" / "exports", FILES["parquet"], kind="parquet")
    names = ds.column_names
    at = names.index("conversations")
    assert names[at + 1 : at + 3] == ["instruction_2", "response_2"]
    assert "instruction_3" not in names
    assert (ds[3]["instruction_2"], ds[3]["response_2"]) == ("Café?", "Oui.")
    assert ds[0]["instruction_2"] is None and ds[0]["response_2"] is None


def test_preference_rewards_in_the_released_dpo_shape(exported, tmp_path):
    """export.preference_rewards_column=rewards_armorm: the released DPO sets' column, a list of
    {"score"} next to `rewards`; rows without preference samples get null."""
    _, _, rows = exported
    rows = [dict(r) for r in rows]
    rows[2]["rewards"] = [0.5, -1.25]
    store = RunStore(str(tmp_path / "run"))
    cfg = ExportConfig(formats=["parquet"], preference_rewards_column="rewards_armorm")
    table = tagged_table(rows)
    rewards = pa.array([r.get("rewards") for r in rows], pa.list_(pa.float64()))
    write_exports(store, table.append_column("rewards", rewards), cfg)
    ds = _load(tmp_path / "run" / "exports", FILES["parquet"], kind="parquet")
    assert ds.column_names.index("rewards_armorm") == ds.column_names.index("rewards") + 1
    assert ds[2]["rewards_armorm"] == [{"score": 0.5}, {"score": -1.25}]
    assert ds[0]["rewards_armorm"] is None
