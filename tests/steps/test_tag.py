"""The tag step on local Ray with tiny models: every pool's columns, parsing, batching, resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pyarrow as pa
import pytest

from magpie_ray.config import GuardConfig, RewardConfig
from magpie_ray.engines.scorers import HFRewardScorer
from magpie_ray.steps import tagging as tag
from magpie_ray.steps.generate.schema import GENERATED_SCHEMA
from magpie_ray.storage import RunStore
from magpie_ray.taggers import judge
from magpie_ray.taggers.reward import load_scorer
from magpie_ray.taggers.safety import SafetyTagger
from tests.actor_kills import BackgroundRun, kill_at, rows_on_disk
from tests.helpers import (
    QUESTIONS,
    generated_rows,
    read_parts,
    scraped_counters,
    tag_config,
    write_generated,
)

ROWS = 16


@pytest.mark.parametrize(
    "killed",
    [
        pytest.param(("JudgeTagger",), id="judge"),
        pytest.param(
            ("RewardTagger", "SafetyTagger", "JudgeTagger"), id="three", marks=pytest.mark.chaos
        ),
    ],
)
def test_tag_step_fills_every_pool_survives_killed_taggers_and_resumes(
    local_ray, tmp_path, tiny_model_path, tiny_reward_path, killed
):
    # Checked against code that loses rows: with a restarted judge answering its retried
    # batch with no rows and the tag step's sweep for untagged rows off, 0 of 16 rows were
    # tagged and the counts check failed.
    cfg = tag_config(tmp_path, tiny_model_path, tiny_reward_path)
    store = RunStore(cfg.run_uri)
    generated = {r["index"]: r for r in generated_rows(ROWS)}
    write_generated(store, list(generated.values()))
    tagged_dir = Path(store.kept_dir("tag"))

    run = BackgroundRun(tag.run_step, cfg, store)
    # Actors killed mid-call: Ray restarts them and retries their batches. Each pool works
    # through every batch before the writer's first part, so the kills land when an actor is
    # in a call, not at a row count of tagged/.
    for pool in killed:
        at = kill_at(run, pool, lambda: rows_on_disk(tagged_dir), 0, phase="working")
        assert at is not None and at < ROWS, f"the {pool} kill landed after the run"
    stats = run.join(timeout=600)
    assert (stats.rows_todo, stats.rows_tagged, stats.rows_missing) == (ROWS, ROWS, 0)
    # Ray metrics: the rows tagged reach the node's Prometheus endpoint, under the run's name
    # (a writer retried after a kill may count its part twice, never fewer).
    port = local_ray.nodes()[0]["MetricsExportPort"]
    counted = scraped_counters(port, Path(cfg.run_uri).name, {"magpie_rows_tagged": ROWS})
    assert counted.get("magpie_rows_tagged", 0) >= ROWS, counted
    assert stats.pools == ("reward", "guard", "judge", "embedder")
    rows = read_parts(tagged_dir)
    assert sorted(r["uuid"] for r in rows) == sorted(r["uuid"] for r in generated.values())
    by_index = {r["index"]: r for r in rows}
    for row in rows:
        # generated columns travel through untouched
        assert row["instruction"] == generated[row["index"]]["instruction"]
        assert row["conversations"][0]["value"] == row["instruction"]
        assert row["language"] == "EN"
        assert row["instruction_length"] == len(row["instruction"])
        assert isinstance(row["instruct_reward"], float) and math.isfinite(row["instruct_reward"])
        assert row["reward_model"] == "stand-in:tiny-rm"
        if row["index"] % 2:
            assert row["base_reward"] is None and row["rewards"] is None
            assert row["chosen"] is None and row["preference_pair_reason"] is None
        else:
            assert row["reward_difference"] == pytest.approx(
                row["instruct_reward"] - row["base_reward"]
            )
            assert len(row["rewards"]) == 3
            best = row["responses"][row["rewards"].index(max(row["rewards"]))]
            worst = row["responses"][row["rewards"].index(min(row["rewards"]))]
            if row["preference_pair_reason"] is None:
                assert row["chosen"][1] == {"role": "assistant", "content": best}
                assert row["rejected"][1] == {"role": "assistant", "content": worst}
                assert row["chosen"][0] == {"role": "user", "content": row["instruction"]}
            else:
                assert row["chosen"] is None and row["rejected"] is None
        assert row["safety_model"] == "stand-in:tiny-chat"
        # constrained decoding on vLLM: every verdict parses
        assert row["safety"] in ("safe", "unsafe"), row["llama_guard_2"]
        assert row["embedding_model"] == "all-MiniLM-L6-v2"
        assert len(row["embedding"]) == 384
        assert abs(sum(v * v for v in row["embedding"]) - 1.0) < 1e-4
        errors = {e["tag"] for e in row["tag_errors"]}
        for column, labels in (
            ("difficulty", judge.DIFFICULTY_LABELS),
            ("input_quality", judge.QUALITY_LABELS),
            ("task_category", judge.TASK_CATEGORIES),
        ):
            # a label from the set, or null with a recorded reason
            assert row[column] in labels or (row[column] is None and errors), row
        assert row["task_category_generator"] == "tiny-chat"
    # identical instruction and response: identical reward and embedding, whatever the batch
    assert by_index[0]["embedding"] == pytest.approx(by_index[6]["embedding"], abs=1e-5)
    assert by_index[0]["instruct_reward"] == pytest.approx(by_index[6]["instruct_reward"], abs=1e-4)

    # a lost part is redone, nothing else (the bookkeeping is the same with or without the
    # model pools, so they stay off: starting them again here would only cost a minute)
    parts = sorted(tagged_dir.glob("part-*.parquet"))
    lost = len(read_parts_of(parts[0]))
    parts[0].unlink()
    for name in ("reward", "guard", "judge", "embedder"):
        getattr(cfg, name).enabled = False
    again = tag.run_step(cfg, store)
    assert (again.rows_todo, again.rows_done_before, again.rows_tagged) == (
        lost,
        ROWS - lost,
        lost,
    )
    uuids = [r["uuid"] for r in read_parts(tagged_dir)]
    assert sorted(uuids) == sorted(r["uuid"] for r in generated.values())

    # all done: nothing to do, no pool starts
    done = tag.run_step(cfg, store)
    assert (done.rows_todo, done.rows_tagged) == (0, 0)


def read_parts_of(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_batched_reward_scores_equal_one_at_a_time(tiny_reward_path):
    conversations = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": "Sure. " * (i + 1)}]
        for i, q in enumerate(QUESTIONS)
    ]
    batched = HFRewardScorer(str(tiny_reward_path), max_length=256, micro_batch_size=8)
    single = HFRewardScorer(str(tiny_reward_path), max_length=256, micro_batch_size=1)
    assert batched.score(conversations) == pytest.approx(single.score(conversations), abs=1e-4)


def test_conversations_are_truncated_to_the_reward_models_own_length(tiny_reward_path):
    """reward.max_length above the model's 2,048 positions: truncation stops at the model's."""
    long = [{"role": "user", "content": "Tell me everything. " * 600}]
    long.append({"role": "assistant", "content": "Fine."})
    scorer = HFRewardScorer(str(tiny_reward_path), max_length=100_000, micro_batch_size=2)
    assert scorer.max_length == 2048
    fitted = HFRewardScorer(str(tiny_reward_path), max_length=2048, micro_batch_size=2)
    assert scorer.score([long]) == pytest.approx(fitted.score([long]), abs=1e-5)


def test_out_of_memory_splits_the_micro_batch_and_scores_every_row(tiny_reward_path):
    """Forward passes over more than 128 padded tokens run out of memory: the scorer splits the
    batch, lowers its token cap for later calls, and every score equals one-at-a-time scoring."""
    import torch

    conversations = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": "Sure. " * (i + 1)}]
        for i, q in enumerate(QUESTIONS)
    ]
    single = HFRewardScorer(str(tiny_reward_path), max_length=256, micro_batch_size=1)
    scorer = HFRewardScorer(str(tiny_reward_path), max_length=256, micro_batch_size=8)
    shapes = []
    budget = 128

    def out_of_memory_over_budget(module, args, kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        if kwargs["input_ids"].numel() > budget:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    hook = scorer.model.register_forward_pre_hook(out_of_memory_over_budget, with_kwargs=True)
    assert scorer.score(conversations) == pytest.approx(single.score(conversations), abs=1e-4)
    first_splits = scorer.oom_splits
    assert first_splits >= 1 and shapes[0][0] == 8
    assert scorer.max_batch_tokens is not None and scorer.max_batch_tokens < 8 * shapes[0][1]
    scorer.score(conversations)  # the lowered cap: fewer batches fail a second time
    assert scorer.oom_splits - first_splits < first_splits
    hook.remove()

    budget = 0  # not even one conversation fits: a clear error, not an endless split
    scorer.model.register_forward_pre_hook(out_of_memory_over_budget, with_kwargs=True)
    with pytest.raises(RuntimeError, match="lower reward.max_length"):
        scorer.score(conversations[:1])


def test_unconstrained_guard_output_is_parsed_or_null_with_reason(tiny_model_path):
    """HF cannot constrain decoding: a rambling guard gives null tags with reasons, no crash."""
    config = GuardConfig(
        name="tiny", path=str(tiny_model_path), engine="hf", max_model_len=512,
        use_chat_template=False, constrain_verdict=False,
    )  # fmt: skip
    tagger = SafetyTagger(config, seed=0)
    try:
        table = pa.Table.from_pylist(generated_rows(4), schema=GENERATED_SCHEMA)
        out = tagger(table).to_pylist()
    finally:
        tagger.engine.close()
    for row in out:
        reasons = [e["reason"] for e in row["tag_errors"]]
        if row["safety"] is None:
            assert reasons and "guard" in reasons[0], row
        else:
            assert row["safety"] in ("safe", "unsafe")


def test_vllm_pooling_reward_equals_transformers(tiny_reward_path):
    """reward.engine=vllm (pooling runner, raw logits) scores like the transformers model."""
    conversations = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": "Fine. " * (i + 1)}]
        for i, q in enumerate(QUESTIONS)
    ]
    config = RewardConfig(path=str(tiny_reward_path), max_length=256, micro_batch_size=4)
    hf = load_scorer(config).score(conversations)
    # a max_length past the model's 2,048 positions is fitted to them, not refused by vLLM
    pooling = load_scorer(
        dataclasses.replace(config, engine="vllm", max_length=100_000, kv_cache_gib=0.125)
    )
    assert pooling.max_length == 2048
    vllm = pooling.score(conversations)
    assert vllm == pytest.approx(hf, abs=2e-3)
    assert len(set(round(v, 4) for v in hf)) > 1  # a constant would pass trivially


def test_multi_turn_rows_score_the_first_turn_and_every_turn(tiny_reward_path):
    """instruct_reward is the first turn's score (comparable with base_reward of the same
    instruction); turn_rewards holds one score per turn, the conversation up to its answer."""
    from magpie_ray.taggers.reward import RewardTagger

    turns = [
        ("human", "What is rain?"),
        ("gpt", "Water falling from clouds."),
        ("human", "And snow?"),
        ("gpt", "Frozen rain, in flakes."),
    ]
    conv = [{"from": f, "value": v} for f, v in turns]
    batch = pa.table(
        {
            "conversations": [conv, conv[:2]],
            "instruction": ["What is rain?"] * 2,
            "base_output": ["Rain is wet.", None],
        }
    )
    config = RewardConfig(path=str(tiny_reward_path), name="tiny", max_length=256)
    out = RewardTagger(config).__call__(batch).to_pylist()
    scorer = HFRewardScorer(str(tiny_reward_path), max_length=256, micro_batch_size=1)
    msgs = [{"role": "user" if f == "human" else "assistant", "content": v} for f, v in turns]
    first, whole, base = scorer.score(
        [msgs[:2], msgs, [msgs[0], {"role": "assistant", "content": "Rain is wet."}]]
    )
    two, one = out
    assert two["instruct_reward"] == pytest.approx(first, abs=1e-4)
    assert two["turn_rewards"] == pytest.approx([first, whole], abs=1e-4)
    assert whole != pytest.approx(first, abs=1e-4), "the second turn must be scored in context"
    assert two["reward_difference"] == pytest.approx(first - base, abs=1e-4)
    assert one["turn_rewards"] == pytest.approx([one["instruct_reward"]])
    assert one["instruct_reward"] == pytest.approx(first, abs=1e-4)


def test_preference_samples_are_scored_by_their_own_model(tiny_model_path, tiny_reward_path):
    """reward.preference with its own path scores `responses` (chosen / rejected come from it);
    instruct_reward stays the reward model's. Pointing both at one path loads one model."""
    from magpie_ray.assets import build_reward_stand_in
    from magpie_ray.config import PreferenceRewardConfig
    from magpie_ray.taggers.reward import RewardTagger

    other = build_reward_stand_in(
        tiny_model_path, tiny_reward_path.parent / (tiny_reward_path.name + "-seed7"), seed=7
    )
    batch = pa.table(
        {
            "conversations": [[{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hi."}]],
            "instruction": ["Hi?"],
            "responses": [["Hello there.", "Hi.", "Good day to you, friend."]],
        }
    )
    pref = PreferenceRewardConfig(name="other-rm", path=str(other))
    tagger = RewardTagger(RewardConfig(path=str(tiny_reward_path), name="rm", preference=pref))
    (row,) = tagger(batch).to_pylist()
    messages = [
        [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": t}]
        for t in batch.column("responses")[0].as_py()
    ]
    theirs = HFRewardScorer(str(other), max_length=4096, micro_batch_size=1).score(messages)
    ours = HFRewardScorer(str(tiny_reward_path), max_length=4096, micro_batch_size=1).score(
        messages
    )
    assert row["rewards"] == pytest.approx(theirs, abs=1e-4)
    assert theirs != pytest.approx(ours, abs=1e-3), "two models must score differently"
    assert row["preference_reward_model"] == "other-rm" and row["reward_model"] == "rm"
    best = batch.column("responses")[0].as_py()[theirs.index(max(theirs))]
    assert row["chosen"][-1]["content"] == best
    same = RewardTagger(
        RewardConfig(
            path=str(tiny_reward_path),
            preference=PreferenceRewardConfig(path=str(tiny_reward_path)),
        )
    )
    assert same.pref_scorer is same.scorer, "one path, one model"
    (row,) = same(batch).to_pylist()
    assert row["rewards"] == pytest.approx(ours, abs=1e-4)


_REWARD_ACTOR = """
import sys
from magpie_ray.config import RewardConfig
from magpie_ray.taggers.reward import RewardTagger
from tests.helpers import generated_rows
import pyarrow as pa

config = RewardConfig(path=sys.argv[1], max_length=256, engine="vllm", kv_cache_gib=0.125)
tagger = RewardTagger(config)
print("ready", flush=True)
sys.stdin.readline()  # the test kills the engine core meanwhile
tagger(pa.Table.from_pylist(generated_rows(2)))
print("a call answered after its engine died", flush=True)
"""


@pytest.mark.chaos  # its own engine start with the core in a process of its own: 30 s here
def test_a_dead_vllm_pooling_engine_ends_the_reward_actor(tiny_reward_path, tmp_path):
    """reward.engine=vllm with its core in a process of its own (vLLM's default, GPUs): the
    core killed, the actor (here a plain process holding a RewardTagger) exits by itself with
    one line naming the engine, so that Ray restarts it; it never answers with a dead engine."""
    import os
    import subprocess
    import sys

    import psutil

    from tests.actor_kills import ENGINE_CORE

    env = os.environ | {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "TQDM_DISABLE": "1"}
    log = tmp_path / "actor.err"  # a file: vLLM's start-up log would fill a pipe
    with open(log, "w") as stderr:
        actor = subprocess.Popen(
            [sys.executable, "-c", _REWARD_ACTOR, str(tiny_reward_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        lines = iter(actor.stdout.readline, "")  # vLLM logs to stdout too
        assert "ready" in (line.strip() for line in lines), log.read_text()[-3000:]
        cores = [
            p
            for p in psutil.Process(actor.pid).children(recursive=True)
            if ENGINE_CORE in " ".join(p.cmdline())
        ]
        assert len(cores) == 1, "vLLM's engine core runs in a process of its own"
        cores[0].kill()
        actor.stdin.write("go\n")
        actor.stdin.flush()
        out, _ = actor.communicate(timeout=120)
    finally:
        actor.kill()
    err = log.read_text()
    assert actor.returncode == 1
    assert "answered" not in out
    assert f"reward (vllm, {tiny_reward_path}) died mid-run (EngineDeadError" in err
    assert "exiting this actor" in err
