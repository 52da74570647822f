"""Reward tags: a reward model's score of each conversation, batched with padding.

Reads `conversations` (all turns), and when present `base_output` and `responses`. Writes
`instruct_reward` (float: the first turn's score, as the reference scores it, so it compares with
`base_reward` of the same instruction), `turn_rewards` (one score per turn: the conversation up to
that turn's answer; a single-turn row's list is its one score), `reward_model` (its name; a
stand-in says so), `base_reward` and `reward_difference` (instruct_reward - base_reward; null
without `base_output`), and for rows with `responses`: `rewards` (one per response, scored by
`reward.preference`'s model when it has its own path, as the reference scores them with ArmoRM,
else by the reward model in the same pass), `preference_reward_model` (which), `chosen` /
`rejected` (role/content message lists: highest and lowest reward) and `preference_pair_reason`
(null when the pair is valid, else why there is none: fewer than two scored responses, a tie, or
a margin under `reward.preference_min_margin`). Rows are never dropped here.

Any Hugging Face sequence-classification model serves, on transformers (`reward.engine=hf`) or
vLLM's pooling runner (`reward.engine=vllm`): the scorers are `engines/scorers.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ..columns import MESSAGE, set_columns
from ..config import RewardConfig
from ..conversations import pair_messages, to_messages
from ..engines.lifecycle import engine_death_exits
from ..engines.scorers import HFRewardScorer, VLLMRewardScorer, load_scorer
from .spec import Tagger

COLUMNS = {
    "instruct_reward": pa.float64(),
    "turn_rewards": pa.list_(pa.float64()),
    "reward_model": pa.string(),
    "base_reward": pa.float64(),
    "reward_difference": pa.float64(),
    "rewards": pa.list_(pa.float64()),
    "chosen": pa.list_(MESSAGE),
    "rejected": pa.list_(MESSAGE),
    "preference_pair_reason": pa.string(),
    "preference_reward_model": pa.string(),  # the model behind `rewards`, chosen and rejected
}


@dataclass(frozen=True)
class PreferencePair:
    chosen: list[dict] | None
    rejected: list[dict] | None
    reason: str | None  # None when the pair is valid


def preference_pair(
    instruction: str,
    responses: list[str],
    rewards: list[float | None],
    min_margin: float = 0.0,
) -> PreferencePair:
    """Chosen = the highest-reward response, rejected = the lowest, if they differ enough.

    A tie (equal best and worst reward, or identical texts) never makes a pair: DPO on it
    teaches nothing. `min_margin` > 0 also rejects pairs closer than the margin.
    """
    scored = [(r, text) for text, r in zip(responses, rewards, strict=True) if r is not None]
    if len(scored) < 2:
        return PreferencePair(None, None, "fewer than two scored responses")
    best = max(scored, key=lambda item: item[0])
    worst = min(scored, key=lambda item: item[0])
    if best[0] == worst[0] or best[1] == worst[1]:
        return PreferencePair(None, None, "tie")
    if best[0] - worst[0] < min_margin:
        return PreferencePair(None, None, f"margin below {min_margin:g}")
    return PreferencePair(
        pair_messages(instruction, best[1]), pair_messages(instruction, worst[1]), None
    )


def _turn_ends(messages: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The conversation up to each assistant answer (a leading system message kept)."""
    return [messages[: k + 1] for k, m in enumerate(messages) if m["role"] == "assistant"]


class RewardTagger:
    """Ray Data actor: the reward model loaded once; `__call__` adds the reward columns."""

    def __init__(self, config: RewardConfig, seed: int = 0):
        from ..engines import start_model

        def start(key: str, model) -> HFRewardScorer | VLLMRewardScorer:
            return start_model(
                key,
                str(model.engine),
                model.path,
                lambda: load_scorer(model, key),
                config.start_timeout_s,
                "reward.start_timeout_s",
            )

        self.scorer = start("reward", config)
        self.model_name = config.recorded_name
        self.min_margin = config.preference_min_margin
        pref = config.preference
        if pref.path is None or pref.path == config.path:  # one model scores everything
            self.pref_scorer, self.pref_name = self.scorer, self.model_name
        else:
            self.pref_scorer = start("reward.preference", pref)
            self.pref_name = pref.name or pref.path
        # A dead vLLM pooling engine takes this actor with it (Ray restarts it, retries the call).
        scorers = {"reward": self.scorer, "reward.preference": self.pref_scorer}
        self.engines = {f"{k} ({s.kind}, {s.path})": s for k, s in scorers.items()}

    def __call__(self, batch):
        with engine_death_exits(self.engines):
            return self._tag(batch)

    def _tag(self, batch):
        rows = batch.select(
            [
                c
                for c in ("conversations", "instruction", "base_output", "responses")
                if c in batch.column_names
            ]
        ).to_pylist()
        n = len(rows)
        jobs: list[list[dict[str, str]]] = []
        slots: list[tuple[str, int, int]] = []  # (kind, row, response index)
        turns = [0] * n
        for i, row in enumerate(rows):
            for end in _turn_ends(to_messages(row["conversations"])):
                jobs.append(end)
                slots.append(("turn", i, turns[i]))
                turns[i] += 1
            if row.get("base_output"):
                jobs.append(pair_messages(row["instruction"], row["base_output"]))
                slots.append(("base", i, 0))
        pref_jobs: list[list[dict[str, str]]] = []
        pref_slots: list[tuple[str, int, int]] = []
        own = self.pref_scorer is self.scorer  # one model: one scoring pass for every job
        for i, row in enumerate(rows):
            for j, text in enumerate(row.get("responses") or []):
                (jobs if own else pref_jobs).append(pair_messages(row["instruction"], text))
                (slots if own else pref_slots).append(("pref", i, j))
        scores = self.scorer.score(jobs)
        if pref_jobs:
            slots, scores = slots + pref_slots, scores + self.pref_scorer.score(pref_jobs)
        turn_rewards: list[list[float]] = [[0.0] * t for t in turns]
        base: list[float | None] = [None] * n
        prefs: list[list[float] | None] = [
            [None] * len(row["responses"]) if row.get("responses") else None for row in rows
        ]
        for (kind, i, j), value in zip(slots, scores, strict=True):
            if kind == "turn":
                turn_rewards[i][j] = value
            elif kind == "base":
                base[i] = value
            else:
                prefs[i][j] = value
        main = [r[0] if r else None for r in turn_rewards]
        columns = {
            "instruct_reward": main,
            "turn_rewards": [r or None for r in turn_rewards],
            "reward_model": [self.model_name] * n,
            "base_reward": base,
            "reward_difference": [
                None if b is None else m - b for m, b in zip(main, base, strict=True)
            ],
        }
        if "responses" in batch.column_names:
            pairs = [
                preference_pair(row["instruction"], row["responses"], r, self.min_margin)
                if r is not None
                else PreferencePair(None, None, None)
                for row, r in zip(rows, prefs, strict=True)
            ]
            columns |= {
                "rewards": prefs,
                "chosen": [p.chosen for p in pairs],
                "rejected": [p.rejected for p in pairs],
                "preference_pair_reason": [p.reason for p in pairs],
                "preference_reward_model": [
                    self.pref_name if r is not None else None for r in prefs
                ],
            }
        return set_columns(batch, columns, COLUMNS)


def config_problems(config: RewardConfig, key: str) -> list[str]:
    """The reward model's batching numbers."""
    return [
        f"{key}.{name}={value}; must be at least 1"
        for name in ("max_length", "micro_batch_size", "max_batch_tokens")
        if (value := getattr(config, name)) is not None and value < 1
    ]


TAGGER = Tagger(
    name="reward",
    columns=COLUMNS,
    actor=RewardTagger,
    needs_chat_template=True,
    model_column="reward_model",
    check=config_problems,
)
