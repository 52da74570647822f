"""The whole default path on local Ray, with generation streaming into tagging: SmolLM2 writes
clean, distinct instructions and judges them for real, stand-ins score and guard, then dedup,
select, export and the report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from magpie_ray import pipeline
from magpie_ray.assets import build_reward_stand_in
from magpie_ray.config import register
from magpie_ray.report import format_summary
from magpie_ray.steps.tag import judge
from tests.conftest import CACHE
from tests.e2e.test_smollm2 import LEAKS
from tests.helpers import read_parts, run_uuids

CONF = Path(__file__).resolve().parents[2] / "conf"
N = 12


def test_default_conf_generates_and_tags(local_ray, smollm2_path, tmp_path):
    build_reward_stand_in(smollm2_path, CACHE / "models" / "smollm2-135m-reward-stand-in")
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        dcfg = compose(
            config_name="config",
            overrides=[
                f"output_dir={tmp_path}",
                "run_name=tagged-demo",
                f"generate.num_samples={N}",
                "generate.batch_size=4",
                "tag.stream=true",
                "generate.instruction.max_tokens=128",
                "generate.response.max_tokens=96",
                "judge.pool.batch_size=4",
                "guard.pool.batch_size=4",
                "reward.pool.batch_size=4",
            ],
        )
    cfg = OmegaConf.to_object(dcfg)
    assert cfg.steps == ["generate", "tag", "dedup", "select", "export"]
    result = pipeline.run(cfg)

    # SmolLM2 with its system turn in the pre-query and min_p: clean, distinct instructions.
    kept, dropped = run_uuids(tmp_path / "tagged-demo")
    assert len(set(kept + dropped)) == len(kept + dropped) == N
    generated = read_parts(tmp_path / "tagged-demo" / "generated")
    counts = Counter(r["instruction"] for r in generated)
    good = [
        r
        for r in generated
        if r["instruction"].strip()
        and not any(leak in r["instruction"] for leak in LEAKS)
        and counts[r["instruction"]] == 1
    ]
    shown = "\n".join(repr(r["instruction"]) for r in generated)
    assert len(good) >= 0.8 * N, f"{len(good)}/{N} clean distinct instructions:\n{shown}"
    assert all(r["response"] and "<|im_end|>" not in r["response"] for r in generated)
    assert all(r["gen_input_configs"]["min_p"] == 0.05 for r in generated)

    tagged = read_parts(tmp_path / "tagged-demo" / "tagged")
    assert sorted(r["uuid"] for r in tagged) == sorted(r["uuid"] for r in generated)
    assert result.tag.rows_streamed > 0, "generation streamed into tagging"
    labelled = 0
    for row in tagged:
        assert row["reward_model"] == "stand-in:smollm2-135m-random-head"
        assert row["safety_model"] == "stand-in:smollm2-135m-instruct"
        assert row["safety"] in ("safe", "unsafe")
        assert row["task_category_generator"] == "smollm2-135m-instruct"
        assert isinstance(row["instruct_reward"], float)
        assert len(row["embedding"]) == 384
        reasons = [e["reason"] for e in row["tag_errors"]]
        tags = (row["difficulty"], row["input_quality"], row["task_category"])
        if None in tags:
            assert reasons, row
        else:
            labelled += 1
            assert row["difficulty"] in judge.DIFFICULTY_LABELS
            assert row["input_quality"] in judge.QUALITY_LABELS
            assert row["task_category"] in judge.TASK_CATEGORIES
    # JSON-constrained decoding: a real (if small) judge labels nearly every row
    assert labelled >= 0.75 * len(tagged), [r["tag_errors"] for r in tagged]

    summary = result.summary.tagged
    assert summary is not None and summary.rows == len(tagged)
    assert sum(summary.labels["task_category"].values()) == len(tagged)
    text = format_summary(result.summary, result.generate, tag_stats=result.tag)
    assert f"rows tagged: {len(tagged)}" in text and "reward model: stand-in:" in text

    # the global steps ran on the tagged rows: every row is deduped, then kept or dropped once
    run = tmp_path / "tagged-demo"
    deduped = read_parts(run / "deduped")
    assert sorted(r["uuid"] for r in deduped) == sorted(r["uuid"] for r in tagged)
    assert all(r["min_neighbor_distance"] is not None for r in deduped)
    kept = [r["uuid"] for r in read_parts(run / "selected")]
    dropped = [r["uuid"] for r in read_parts(run / "dropped" / "select")]
    assert sorted(kept + dropped) == sorted(r["uuid"] for r in tagged)
    lines = (run / "exports" / "sharegpt.jsonl").read_text().splitlines()
    assert len(lines) == len(kept) == result.export.files["sharegpt.jsonl"]
    report = Path(result.report_path).read_text()
    assert "Rows per step" in report and "data:image/png;base64," in report
