"""The demo as `make run` runs it (`python -m magpie_ray` on the default conf, its own local Ray,
Ray's default auth), smaller, with generation streaming into tagging: SmolLM2 writes clean,
distinct instructions and judges them for real, stand-ins score and guard, then dedup, select,
export and the report; the console holds only the run's own lines (issue 32), what Ray and torch
print besides goes to logs/driver.log."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from magpie_ray.assets import build_reward_stand_in
from magpie_ray.taggers import judge
from tests.conftest import CACHE
from tests.e2e.test_smollm2 import LEAKS
from tests.helpers import (
    assert_card_reads_back,
    card_funnel,
    read_parts,
    run_uuids,
    summary_funnel,
)

REPO = Path(__file__).resolve().parents[2]
N = 8
# What a run's console must never show (each went there before issue 32): Ray's token-auth
# advice, its C++ core worker's note on actor arguments, torch's Triton notice from each actor.
NOISE = ("Token authentication is enabled", "core_worker.cc", "Triton not available")


def test_the_demo_run_writes_tags_and_exports_with_a_quiet_console(smollm2_path, tmp_path):
    build_reward_stand_in(smollm2_path, CACHE / "models" / "smollm2-135m-reward-stand-in")
    overrides = [
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
        "cluster.gpu_hour_usd=2",
        # no quality condition (the 135M judge rates nearly all "very poor"): the dataset card
        # then has kept rows for datasets to load
        "filter=pro-3",
    ]
    # The environment `make run` has: no Ray address, Ray's own auth default.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-m", "magpie_ray", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "tagged-demo"
    console = done.stderr.splitlines()
    assert console[0] == f"magpie_ray: log file {run}/logs/driver.log", console[:3]
    assert all(line.startswith("magpie_ray: ") for line in console if line.strip()), console
    for needle in (*NOISE, "Traceback", "WARNING"):
        assert needle not in done.stdout + done.stderr, needle
    log = (run / "logs" / "driver.log").read_text()
    assert NOISE[0] in log and "constructor arguments in the object store" in log

    # SmolLM2 with its system turn in the pre-query and min_p: clean, distinct instructions.
    kept, dropped = run_uuids(run)
    assert len(set(kept + dropped)) == len(kept + dropped) == N
    generated = read_parts(run / "generated")
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

    tagged = read_parts(run / "tagged")
    assert sorted(r["uuid"] for r in tagged) == sorted(r["uuid"] for r in generated)
    streamed = re.search(
        r"this invocation: (\d+) rows tagged \((\d+) as they were generated", done.stdout
    )
    assert streamed and int(streamed.group(1)) > 0, "generation streamed into tagging"
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

    assert f"rows tagged: {len(tagged)}" in done.stdout and "reward model: stand-in:" in done.stdout

    # the global steps ran on the tagged rows: every row is deduped, then kept or dropped once
    deduped = read_parts(run / "deduped")
    assert sorted(r["uuid"] for r in deduped) == sorted(r["uuid"] for r in tagged)
    assert all(r["min_neighbor_distance"] is not None for r in deduped)
    kept = [r["uuid"] for r in read_parts(run / "selected")]
    dropped = [r["uuid"] for r in read_parts(run / "dropped" / "select")]
    assert sorted(kept + dropped) == sorted(r["uuid"] for r in tagged)
    lines = (run / "exports" / "sharegpt.jsonl").read_text().splitlines()
    assert len(lines) == len(kept)
    assert f"report: {run}/report.html" in done.stdout
    report = (run / "report.html").read_text()
    assert "Rows per step" in report and "data:image/png;base64," in report

    # The dataset card: huggingface_hub and datasets read it back, every config gives exactly
    # its file's rows, and its funnel is the summary's (and the report's), figure for figure.
    exports = run / "exports"
    assert f"dataset card: {exports}/README.md" in done.stdout
    card = assert_card_reads_back(exports, tmp_path / "hf-cache")
    assert card.data.license == "apache-2.0"  # the smollm2 preset's (its folder has no card)
    funnel = summary_funnel(done.stdout)
    assert card_funnel(card.text) == funnel
    assert funnel[0] == ("requested", N) and ("kept by the filter", len(kept)) in funnel
    for stage, rows in funnel:
        assert f"<tr><td>{html.escape(stage)}</td><td>{rows}</td></tr>" in report
    # What the run cost: on CPU actors no GPU-hours, so $0; the rate is per actor
    assert "\ncost and efficiency:\n  generate wall time: " in done.stdout
    for figure in ("output tokens/s per actor (CPU)", "GPU-hours: 0.000", "cost at $2/GPU-hour"):
        assert figure in done.stdout and html.escape(figure.split(":")[0]) in report
    assert "### Compute" in card.text and "| GPU-hours | 0.000 |" in card.text
    # Diversity, all generated rows beside the kept ones, and the topic clusters (k = 2 here)
    assert "\ndiversity (generated | kept):\n  rows: 8 | " in done.stdout
    assert "  topic clusters: 2 | " in done.stdout
    assert "<h3>Diversity</h3>" in report and "<h2>Topic clusters (2;" in report
    assert "### Diversity" in card.text and "topic clusters (all generated rows)" in card.text
    assert {r["topic"] for r in deduped} == {0, 1}
