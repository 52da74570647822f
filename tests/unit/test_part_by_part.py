"""Select and export part by part give what they gave with every row in memory.

`select.select_parts` against `select.select_rows` on the concatenated table (ties, nulls, NaN,
balance groups, truncated rows, missing lengths); the select step on part files against
`select_rows`; `export.write_exports` over interleaved parts against the whole-table export
this project shipped before (kept below as the oracle), byte for byte.
"""

import json
import posixpath
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from magpie_ray.config import Condition, ExportConfig, FilterConfig
from magpie_ray.export_formats import FORMATS
from magpie_ray.export_writer import JSONL_COLUMNS, REASONING_COLUMNS, Parts, write_exports
from magpie_ray.selection import select_parts, select_rows
from magpie_ray.steps import select as select_step
from magpie_ray.storage import RunStore, part_name
from tests.helpers import tagged_rows, tagged_table
from tests.unit.test_select import preset

ROWS = 300


def _ragged_table(seed: int = 0) -> pa.Table:
    """Rows built to make top-k and the row stages disagree if anything is off: a few lengths
    only (many ties, broken by uuid), null and NaN rewards, null and unknown labels, truncated
    responses, null lengths (the response text counts), uuids out of row order."""
    rng = np.random.default_rng(seed)
    qualities = ["very poor", "poor", "average", "good", "excellent", None, "superb"]
    difficulties = ["very easy", "easy", "medium", "hard", "very hard", None]
    records = []
    for i in range(ROWS):
        length = int(rng.choice([5, 40, 40, 41, 90]))
        reward = float(rng.normal())
        records.append(
            {
                "uuid": f"{int(rng.integers(0, 10**6)):06d}-{i}",
                "index": int(rng.integers(0, 50)),
                "instruction": "Why?" + (":" if i % 23 == 0 else "") + "\n" * (i % 3 * 3),
                "task_category": "Coding & Debugging"
                if i % 4 == 0
                else (None if i % 11 else "Math"),
                "response": "r" * length,
                "response_length": None if i % 13 == 0 else length,
                "response_finish_reason": "length" if i % 17 == 0 else "stop",
                "input_quality": qualities[i % len(qualities)],
                "difficulty": difficulties[(i * 7) % len(difficulties)],
                "instruct_reward": None if i % 19 == 0 else (np.nan if i % 29 == 0 else reward),
                "reward_difference": float(rng.normal()),
                "is_canonical": None if i % 31 == 0 else bool(i % 5),
                "min_neighbor_distance": float(rng.uniform(0, 1)),
            }
        )
    return pa.Table.from_pylist(records)


RECIPES = {
    "released": preset("released", top_k=40),
    "pro-3": preset("pro-3", top_k=100),
    "pro-6": preset("pro-6", top_k=61),  # an odd total: the groups' shares differ
    "air": preset("air", top_k=9),
    # the line-break rule with its exemption: task_category must be read although no
    # condition's column names it
    "card-lines": preset("card-magpie-llama-3.3-pro-500k-filtered", top_k=30),
    "no top-k": preset("released", top_k=None),
    # a cap per label before the top-k (and without one); null labels are a label too
    "balance_by": preset("pro-3", top_k=None, balance_by="task_category", max_share=0.5),
    "balance_by + top-k": preset("pro-3", top_k=50, balance_by="difficulty", max_share=0.3),
    "top-k above the rows": preset("pro-3", top_k=10_000),
    "contains": FilterConfig(
        conditions=[Condition("instruction", "not_contains", ":")], top_k=7, length_column="x"
    ),
}


def _split(table: pa.Table, sizes: list[int]) -> list[pa.Table]:
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == table.num_rows
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("sizes", [[ROWS], [1, 99, 0, 150, 50], [7] * 42 + [6]])
def test_select_parts_equals_select_rows_on_the_whole_table(name, sizes):
    recipe, table = RECIPES[name], _ragged_table()
    whole = select_rows(table, recipe)
    parts = _split(table, sizes)
    yielded = list(select_parts(lambda i: parts[i], len(parts), recipe))
    assert [i for i, _ in yielded] == list(range(len(parts)))
    kept = np.concatenate([s.kept for _, s in yielded])
    assert np.array_equal(kept, whole.kept), f"{name}: other rows kept"
    assert [r for _, s in yielded for r in s.reasons] == whole.reasons
    assert [d for _, s in yielded for d in s.details] == whole.details
    assert 0 < whole.num_kept < ROWS or name == "top-k above the rows"
    if recipe.top_k is not None and recipe.top_k < ROWS:
        assert whole.drop_counts().get("not in top-k longest", 0) > 0, "top-k did not bite"
    if recipe.balance_by:
        capped = whole.drop_counts().get(f"{recipe.balance_by} over max_share", 0)
        assert capped > 0, "the cap did not bite"


@pytest.mark.parametrize("name", ["pro-6", "card-lines", "balance_by + top-k"])
def test_the_select_step_on_part_files_equals_select_rows(tmp_path, name):
    table, recipe = _ragged_table(seed=1), RECIPES[name]
    store = RunStore(str(tmp_path / "run"))
    for piece in _split(table, [60, 1, 100, 139]):
        name = part_name(piece.column("index")[0].as_py(), piece.column("uuid").to_pylist())
        store.write_part(store.kept_dir("dedup"), name, piece)
    stats = select_step.select_run(store, recipe)
    whole = select_rows(table, recipe)
    assert (stats.rows, stats.kept, stats.drops) == (ROWS, whole.num_kept, whole.drop_counts())
    kept = store.read_parts(store.kept_dir("select")).column("uuid").to_pylist()
    uuids = table.column("uuid").to_pylist()
    assert sorted(kept) == sorted(u for u, k in zip(uuids, whole.kept, strict=True) if k)
    dropped = store.read_parts(store.dropped_dir("select")).to_pylist()
    expected = {u: (r, d) for u, r, d in zip(uuids, whole.reasons, whole.details, strict=True)}
    assert {r["uuid"]: (r["reason"], r["detail"]) for r in dropped} == {
        u: v for u, v in expected.items() if v[0] is not None
    }
    counted = Counter(r["reason"] for r in dropped)
    assert counted == Counter(whole.drop_counts())


# The export as it was before it went part by part: every selected row in one table, every
# row a Python dict (commit c8b1802, magpie_ray/export_formats.py). The oracle for the tests below.
def _old_write_exports(root: str, table: pa.Table, cfg: ExportConfig) -> None:
    keys = [(k, "ascending") for k in ("index", "uuid") if k in table.column_names]
    table = table.sort_by(keys) if keys else table
    rows = table.select([c for c in JSONL_COLUMNS if c in table.column_names]).to_pylist()
    for name in cfg.formats:
        fmt = FORMATS[name]
        path = posixpath.join(root, fmt.file)
        if fmt.record is None:
            pq.write_table(_old_parquet_table(table, cfg), path)
            continue
        with open(path, "wb") as f:
            for record in (fmt.record(row, cfg) for row in rows):
                if record is not None:
                    f.write((json.dumps(record, ensure_ascii=False) + "\n").encode())


def _old_parquet_table(table: pa.Table, cfg: ExportConfig) -> pa.Table:
    left_out = [] if cfg.include_embedding else ["embedding"]
    left_out += [] if cfg.include_reasoning else list(REASONING_COLUMNS)
    table = table.drop_columns([c for c in left_out if c in table.column_names])
    if cfg.turn_columns and "conversations" in table.column_names:
        turns = [
            [t["value"] for t in conv or [] if t["from"] != "system"]
            for conv in table.column("conversations").to_pylist()
        ]
        most = max((len(t) // 2 for t in turns), default=1)
        at = table.column_names.index("conversations") + 1
        for k in range(2, most + 1):
            for offset, name in ((0, "instruction"), (1, "response")):
                i = 2 * (k - 1) + offset
                values = pa.array([t[i] if i < len(t) else None for t in turns], pa.string())
                table = table.add_column(at, f"{name}_{k}", values)
                at += 1
    if cfg.preference_rewards_column and "rewards" in table.column_names:
        scores = [
            None if r is None else [{"score": v} for v in r]
            for r in table.column("rewards").to_pylist()
        ]
        shape = pa.list_(pa.struct([("score", pa.float64())]))
        at = table.column_names.index("rewards") + 1
        table = table.add_column(at, cfg.preference_rewards_column, pa.array(scores, shape))
    return table


def _selected_parts(tmp_path) -> tuple[RunStore, list[pa.Table]]:
    """Selected parts as a run holds them: indices interleaved across parts (rows finish out of
    order), duplicate indices (tie-broken by uuid), multi-turn and reasoning rows, and one part
    written before the `rewards` column existed."""
    rows = tagged_rows(np.eye(90, 8, dtype=np.float32))
    rng = np.random.default_rng(5)
    for i, row in enumerate(rows):
        row["index"] = int(rng.integers(0, 60))
        row["uuid"] = f"{int(rng.integers(0, 10**6)):06d}"
        row["response_reasoning"] = f"thought {i}" if i % 4 == 0 else None
        row["rewards"] = [0.5, -1.0 * i] if i % 3 == 0 else None
    rows[7]["conversations"] = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "Café? ✓"},
        {"from": "gpt", "value": "Oui."},
    ]
    base = tagged_table(rows)
    extra = pa.table(
        {
            "response_reasoning": pa.array([r["response_reasoning"] for r in rows], pa.string()),
            "rewards": pa.array([r["rewards"] for r in rows], pa.list_(pa.float64())),
        }
    )
    table = pa.Table.from_arrays(
        [*base.columns, *extra.columns], names=[*base.column_names, *extra.column_names]
    )
    order = rng.permutation(len(rows))
    pieces = [table.take(order[a : a + 20]) for a in range(0, len(rows), 20)]
    pieces[2] = pieces[2].drop_columns(["rewards"])
    store = RunStore(str(tmp_path / "run"))
    for n, piece in enumerate(pieces):
        store.write_part(store.kept_dir("select"), f"part-{n:09d}-x.parquet", piece)
    return store, pieces


CONFIGS = {
    "default": ExportConfig(),
    "everything": ExportConfig(
        include_embedding=True,
        include_reasoning=True,
        turn_columns=True,
        preference_rewards_column="rewards_armorm",
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("chunk_rows", [4096, 7, 1])
def test_export_part_by_part_writes_the_bytes_the_whole_table_export_wrote(
    tmp_path, config, chunk_rows
):
    cfg = CONFIGS[config]
    store, pieces = _selected_parts(tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    # What the step gave the old export: every selected part read back and concatenated.
    _old_write_exports(str(old), store.read_parts(store.kept_dir("select")), cfg)
    parts = Parts.of_files(store, store.part_files(store.kept_dir("select")), None)
    stats = write_exports(store, parts, cfg, chunk_rows=chunk_rows)
    new = tmp_path / "run" / "exports"
    for name in cfg.formats:
        file = FORMATS[name].file
        if file.endswith(".jsonl"):
            assert (new / file).read_bytes() == (old / file).read_bytes(), file
            assert stats.files[file] == len((old / file).read_text().splitlines())
        elif chunk_rows >= stats.rows:  # one chunk: one row group, as pq.write_table wrote
            assert (new / file).read_bytes() == (old / file).read_bytes(), file
        else:  # a row group per chunk: the same rows and schema
            assert pq.read_table(new / file).equals(pq.read_table(old / file), check_metadata=True)
            assert pq.ParquetFile(new / file).metadata.num_row_groups > 1
    assert stats.rows == 90
    assert stats.left_out["dpo.jsonl"] == 90 - stats.files["dpo.jsonl"] > 0
    if config == "everything":
        names = pq.read_schema(new / "data.parquet").names
        assert {"instruction_2", "rewards_armorm", "response_reasoning"} <= set(names)


def test_an_empty_selection_exports_what_the_whole_table_export_did(tmp_path):
    store, pieces = _selected_parts(tmp_path)
    empty = store.read_parts(store.kept_dir("select")).slice(0, 0)
    old = tmp_path / "old"
    old.mkdir()
    cfg = replace(CONFIGS["everything"], formats=list(FORMATS))
    _old_write_exports(str(old), empty, cfg)
    stats = write_exports(store, Parts.of_files(store, [], empty.schema), cfg)
    assert stats.rows == 0 and set(stats.files.values()) == {0}
    for fmt in FORMATS.values():
        new = (tmp_path / "run" / "exports" / fmt.file).read_bytes()
        assert new == (old / fmt.file).read_bytes(), fmt.file


@pytest.mark.parametrize("sample", [5, 10_000])
def test_the_report_samples_the_embeddings_the_whole_table_did(tmp_path, monkeypatch, sample):
    from magpie_ray import run_report

    monkeypatch.setattr(run_report, "MAP_SAMPLE", sample)
    rows = tagged_rows(np.random.default_rng(2).standard_normal((60, 8)))
    for i, row in enumerate(rows):
        row["task_category"] = ["Math", "Coding", None][i % 3]
    store = RunStore(str(tmp_path / "run"))
    for a in (0, 7, 30):  # parts of 7, 23 and 30 rows; every 11th row has no embedding
        piece = rows[a : {0: 7, 7: 30, 30: 60}[a]]
        store.write_part(store.kept_dir("tag"), f"part-{a:09d}-x.parquet", tagged_table(piece))
    whole = store.read_parts(store.kept_dir("tag"), columns=["embedding", "task_category"])
    pairs = zip(
        whole.column("embedding").to_pylist(),
        whole.column("task_category").to_pylist(),
        strict=True,
    )
    expected = [(v, c) for v, c in pairs if v is not None]  # the report before (c8b1802)
    if len(expected) > sample:
        import random

        expected = random.Random(4).sample(expected, sample)
    vectors, labels = run_report.embedding_sample(store, store.kept_dir("tag"), seed=4)
    assert vectors == [v for v, _ in expected] and len(vectors) == min(sample, 55)
    assert labels == [c for _, c in expected]  # collect() writes a null as "null"


def test_dedup_reads_parts_one_at_a_time_and_still_refuses_mixed_embedding_sizes(tmp_path):
    from magpie_ray.config import DedupConfig
    from magpie_ray.steps import dedup as dedup_step

    store = RunStore(str(tmp_path / "run"))
    small, large = tagged_rows(np.eye(4, 8)), tagged_rows(np.eye(4, 16), seed=1)
    for n, rows in enumerate((small, large)):
        store.write_part(store.kept_dir("tag"), f"part-{n:09d}-x.parquet", tagged_table(rows))
    with pytest.raises(ValueError, match=r"different sizes \[8, 16\]"):
        dedup_step.dedup_run(store.run_uri, DedupConfig(k=3))
