"""Cost and efficiency of a run (costs.py) on known records: GPU-hours, tokens per second per
GPU or per actor, the busy share, and the cost per million tokens and per thousand kept rows;
invocations of a resumed run add up."""

from __future__ import annotations

import pytest

from magpie_ray.costs import ANCHOR, RunCost, StepRecord, cost_rows, read_costs, record
from magpie_ray.report import format_summary, summarize
from magpie_ray.storage import RunStore


def _gpu_run(tmp_path) -> RunStore:
    store = RunStore(str(tmp_path / "run"))
    # two invocations of generate on 8 actors x 1 GPU: 1,800 s then 1,800 s (a resumed run)
    for _ in range(2):
        record(
            store,
            StepRecord(
                "generate",
                wall_s=1800.0,
                actors=8,
                gpu_s=8 * 1.0 * 1800.0,
                output_tokens=18_000_000,
                busy_s=8 * 1500.0,
                generation_s=1600.0,
            ),
        )
    record(store, StepRecord("tag", wall_s=900.0, actors=2, gpu_s=2 * 1.0 * 900.0))
    return store


def test_invocations_add_up_to_the_runs_figures(tmp_path):
    cost = read_costs(_gpu_run(tmp_path))
    gen = cost.steps["generate"]
    assert gen.wall_s == 3600.0 and gen.output_tokens == 36_000_000
    assert gen.busy_share == pytest.approx(1500 / 1600)
    assert cost.gpu_hours == pytest.approx(8 + 0.5)  # 8 GPUs x 1 h, then 2 GPUs x 0.25 h
    assert cost.tokens_per_s() == (pytest.approx(36e6 / (8 * 3600)), "per GPU")


def test_the_cost_per_million_tokens_and_per_thousand_kept_rows(tmp_path):
    rows = dict(cost_rows(read_costs(_gpu_run(tmp_path)), gpu_hour_usd=2.0, kept=100_000))
    assert rows["GPU-hours"] == "8.500"
    assert rows["cost at $2/GPU-hour"] == "$17.00"
    assert rows["per million output tokens"] == "$0.47"  # 17 / 36
    assert rows["per thousand kept rows"] == "$0.17"
    assert rows["output tokens/s per GPU"] == "1,250"
    assert rows["generate wall time"] == "3600.0 s, engines busy 94%"
    assert rows["for scale"] == ANCHOR
    assert "per million output tokens" not in dict(cost_rows(RunCost(), None, None))


def test_on_cpu_the_rate_is_per_actor(tmp_path):
    store = RunStore(str(tmp_path / "cpu"))
    record(store, StepRecord("generate", 100.0, actors=2, gpu_s=0.0, output_tokens=20_000))
    cost = read_costs(store)
    assert cost.gpu_hours == 0 and cost.tokens_per_s() == (100.0, "per actor (CPU)")


def test_the_summary_prints_them_with_a_gpu_price(tmp_path):
    store = _gpu_run(tmp_path)
    text = format_summary(summarize(store, 0, requested=10, gpu_hour_usd=2.0))
    assert "cost and efficiency:\n  generate wall time: 3600.0 s, engines busy 94%" in text
    assert "  cost at $2/GPU-hour: $17.00" in text
    assert f"  for scale: {ANCHOR}" in text
