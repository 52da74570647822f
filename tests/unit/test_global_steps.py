"""dedup -> select -> export on synthetic `tagged/` parts (no Ray, no models): files, resume."""

import os
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from magpie_ray.config import Config, ConfigError, DedupConfig, FilterConfig
from magpie_ray.report import format_global_steps
from magpie_ray.steps import dedup as dedup_step
from magpie_ray.steps import export
from magpie_ray.steps import select as select_step
from magpie_ray.storage import RunStore, part_name
from tests.helpers import tagged_rows, tagged_table
from tests.unit.test_select import PRESETS

DIM = 16
ROWS = 60
# Planted: rows 1 and 2 copy row 0, row 4 is a near copy of row 3; 10 has no embedding.
DUPLICATES = {1: 0, 2: 0, 4: 3}


def _vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[1] = x[2] = x[0]
    x[4] = x[3] + 0.02 * rng.standard_normal(DIM)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write_tagged(store: RunStore, rows: list[dict], parts: int) -> None:
    for chunk in np.array_split(np.arange(len(rows)), parts):
        batch = [rows[i] for i in chunk]
        name = part_name(batch[0]["index"], [r["uuid"] for r in batch])
        store.write_part(store.kept_dir("tag"), name, tagged_table(batch))


def _config(tmp_path, **filter_changes) -> Config:
    recipe = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(FilterConfig), OmegaConf.load(PRESETS / "released.yaml")
        )
    )
    return Config(
        run_name="steps",
        output_dir=str(tmp_path),
        dedup=DedupConfig(k=10),
        filter=replace(recipe, **filter_changes),
    )


@pytest.fixture
def run(tmp_path):
    cfg = _config(tmp_path)
    store = RunStore(cfg.run_uri)
    _write_tagged(store, tagged_rows(_vectors()), parts=3)
    return cfg, store


def _mtimes(directory) -> dict:
    return {p: os.stat(p).st_mtime_ns for p in sorted(directory.glob("*"))}


def test_dedup_writes_every_row_once_with_its_columns_and_is_resumable(run, tmp_path):
    cfg, store = run
    stats = dedup_step.run_step(cfg, store)
    assert (stats.rows, stats.rows_without_embedding) == (ROWS, 5)  # rows 10, 21, 32, 43, 54
    assert (stats.duplicate_clusters, stats.duplicates, stats.skipped) == (2, 3, False)
    tagged, deduped = tmp_path / "steps" / "tagged", tmp_path / "steps" / "deduped"
    assert sorted(p.name for p in deduped.glob("part-*")) == sorted(
        p.name for p in tagged.glob("part-*")
    )
    table = store.read_parts(store.kept_dir("dedup"))
    assert table.num_rows == ROWS and set(tagged_table([]).schema.names) < set(table.column_names)
    rows = {r["index"]: r for r in table.to_pylist()}
    for dup, original in DUPLICATES.items():
        canonical = min(rows[dup]["uuid"], rows[original]["uuid"])
        assert rows[dup]["min_similar_uuid"] == rows[original]["min_similar_uuid"] == canonical
    assert [rows[i]["is_canonical"] for i in range(5)] == [True, False, False, True, False]
    assert rows[0]["repeat_count"] == 2 and rows[0]["min_neighbor_distance"] < 1e-5
    assert rows[10]["is_canonical"] is None and rows[10]["min_neighbor_distance"] is None
    assert rows[5]["min_similar_uuid"] is None and rows[5]["is_canonical"] is True

    before = _mtimes(deduped)
    again = dedup_step.run_step(cfg, store)
    assert again.skipped and again.duplicates == 3
    assert _mtimes(deduped) == before, "a completed dedup is not redone"


def test_dedup_survivors_do_not_depend_on_row_order_or_parts(run, tmp_path):
    cfg, store = run
    dedup_step.run_step(cfg, store)
    survivors = _survivors(store)
    rows = tagged_rows(_vectors())
    order = np.random.default_rng(3).permutation(ROWS)
    other = RunStore(str(tmp_path / "shuffled"))
    _write_tagged(other, [rows[i] for i in order], parts=4)
    dedup_step.run_step(cfg, other)
    assert _survivors(other) == survivors


def _survivors(store) -> set[str]:
    table = store.read_parts(store.kept_dir("dedup"), columns=["uuid", "is_canonical"])
    return {r["uuid"] for r in table.to_pylist() if r["is_canonical"]}


def test_dedup_recomputes_when_the_tagged_parts_change(run):
    cfg, store = run
    dedup_step.run_step(cfg, store)
    first = store.part_files(store.kept_dir("tag"))[0]
    os.remove(first)
    stats = dedup_step.run_step(cfg, store)
    assert not stats.skipped and stats.rows == ROWS - 20
    assert len(store.part_files(store.kept_dir("dedup"))) == 2


def test_select_counts_every_dropped_row_with_its_reason(run, tmp_path):
    cfg, store = run
    dedup_step.run_step(cfg, store)
    stats = select_step.run_step(cfg, store)
    kept = store.read_parts(store.kept_dir("select"))
    dropped = store.read_parts(store.dropped_dir("select"))
    assert kept.num_rows == stats.kept and kept.num_rows + dropped.num_rows == ROWS
    assert set(kept.column("uuid").to_pylist()).isdisjoint(dropped.column("uuid").to_pylist())
    reasons = dropped.column("reason").to_pylist()
    assert {r: reasons.count(r) for r in set(reasons)} == stats.drops
    assert "input_quality is null" in stats.drops and "is_canonical == True" in stats.drops
    assert set(dropped.column("step").to_pylist()) == {"select"}
    for row in kept.to_pylist():
        assert row["input_quality"] in ("good", "excellent") and row["instruct_reward"] > -10
        assert row["is_canonical"] and row["response_finish_reason"] == "stop"
    assert kept.schema.names == store.read_parts(store.kept_dir("dedup")).schema.names

    assert select_step.run_step(cfg, store).skipped
    narrower = _config(tmp_path, top_k=3)
    stats = select_step.run_step(narrower, store)
    assert not stats.skipped and stats.kept == 3
    assert store.read_parts(store.kept_dir("select")).num_rows == 3, "old parts replaced"
    assert store.read_parts(store.dropped_dir("select")).num_rows == ROWS - 3


def test_export_runs_after_select_and_skips_when_done(run, tmp_path):
    cfg, store = run
    dedup_step.run_step(cfg, store)
    kept = select_step.run_step(cfg, store).kept
    stats = export.run_step(cfg, store)
    assert stats.rows == kept and stats.files["sharegpt.jsonl"] == kept
    assert stats.files["dpo.jsonl"] + stats.left_out["dpo.jsonl"] == kept
    exports = tmp_path / "steps" / "exports"
    assert pq.read_table(exports / "data.parquet").num_rows == kept
    again = export.run_step(cfg, store)
    assert again.skipped
    summary = format_global_steps(dedup_step.run_step(cfg, store), None, again)
    assert "3 duplicates in 2 clusters" in summary and "exports (already done)" in summary


def test_steps_without_input_say_which_step_to_run(tmp_path):
    cfg = _config(tmp_path)
    store = RunStore(cfg.run_uri)
    with pytest.raises(ConfigError, match="tag step"):
        dedup_step.run_step(cfg, store)
    with pytest.raises(ConfigError, match="dedup step"):
        select_step.run_step(cfg, store)
    with pytest.raises(ConfigError, match="select step"):
        export.run_step(cfg, store)


def test_a_selection_that_keeps_nothing_exports_empty_files(run, tmp_path):
    cfg, store = run
    dedup_step.run_step(cfg, store)
    none_kept = _config(tmp_path, top_k=0)
    assert select_step.run_step(none_kept, store).kept == 0
    stats = export.run_step(none_kept, store)
    assert stats.rows == 0 and stats.files["sharegpt.jsonl"] == 0
    exports = tmp_path / "steps" / "exports"
    assert (exports / "sharegpt.jsonl").read_text() == ""
    empty = pq.read_table(exports / "data.parquet")
    assert empty.num_rows == 0 and "instruction" in empty.schema.names
