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

Any Hugging Face sequence-classification model serves: single-logit ones (FsfairX-LLaMA3-RM,
Skywork) score with logit 0; multi-objective ArmoRM (trust_remote_code) with its `score` output.
Conversations are rendered by the reward model's own chat template, then scored in length-sorted
micro-batches so padding stays small (`reward.engine=hf`), or handed all at once to vLLM's
pooling runner, which batches them itself (`reward.engine=vllm`; raw logits, no activation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa

from ...columns import MESSAGE, set_columns
from ...config import RewardConfig
from ...conversations import pair_messages, to_messages
from ...engines.base import resolve_dtype
from ..actor_pools import engine_death_exits, exit_if_engine_died
from .spec import Tagger

log = logging.getLogger(__name__)

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


def fitted_max_length(configured: int, model_config) -> int:
    """`configured`, or the model's own position limit where that is shorter: a conversation is
    truncated to what the model can read, never past it."""
    limit = getattr(model_config, "max_position_embeddings", None)
    return min(configured, limit) if isinstance(limit, int) and limit > 0 else configured


def micro_batches(lengths: list[int], size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped in length order, so each batch pads to similar lengths.

    A batch holds at most `size` rows and, with `max_tokens`, at most that many padded tokens
    (rows x its longest row); a row longer than `max_tokens` goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if (
            group is None
            or len(group) == size
            or (max_tokens is not None and (len(group) + 1) * lengths[i] > max_tokens)
        ):
            groups.append([i])
        else:
            group.append(i)
    return groups


class RewardScorer:
    """A sequence-classification reward model (transformers) on one device; scores chats."""

    def __init__(
        self,
        path: str,
        max_length: int,
        micro_batch_size: int,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_batch_tokens: int | None = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path,
            dtype=getattr(torch, resolve_dtype(dtype, self.device == "cuda")),
            trust_remote_code=trust_remote_code,
        ).to(self.device)
        self.model.eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = fitted_max_length(max_length, self.model.config)
        self.micro_batch_size = micro_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.kind, self.path, self.failure = "hf", path, None  # in this process: never dead
        self.oom_splits = 0  # micro-batches split in two after running out of device memory

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def score(self, conversations: list[list[dict[str, str]]]) -> list[float]:
        """One reward per conversation, in input order."""
        encoded = [
            self.tokenizer(
                self.render(messages),
                add_special_tokens=False,
                truncation=True,
                max_length=self.max_length,
            )["input_ids"]
            for messages in conversations
        ]
        scores: list[float] = [0.0] * len(encoded)
        lengths = [len(ids) for ids in encoded]
        for group in micro_batches(lengths, self.micro_batch_size, self.max_batch_tokens):
            values = self._forward([encoded[i] for i in group])
            for i, value in zip(group, values, strict=True):
                scores[i] = value
        return scores

    def _forward(self, batch: list[list[int]]) -> list[float]:
        """Scores of one padded micro-batch; out of device memory, the two halves one by one.

        A split also lowers `max_batch_tokens` below the batch that failed, so later calls
        do not run out of memory again on the same shapes.
        """
        import torch

        padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        out = None
        try:
            with torch.inference_mode():
                out = self.model(**padded)
        except torch.OutOfMemoryError:
            pass  # handled below, once the traceback no longer holds the forward's tensors
        if out is None:
            del padded
            if self.device == "cuda":
                torch.cuda.empty_cache()
            return self._split(batch)
        values = getattr(out, "score", None)
        if values is None:
            values = out.logits[:, 0]
        return values.float().reshape(-1).tolist()

    def _split(self, batch: list[list[int]]) -> list[float]:
        longest = max(len(ids) for ids in batch)
        if len(batch) == 1:
            raise RuntimeError(
                f"the reward model ran out of device memory on one conversation of {longest}"
                f" tokens; lower reward.max_length (now {self.max_length}) or give the reward"
                f" pool more GPU memory (reward.pool.gpus_per_actor)"
            )
        half = len(batch) // 2
        self.max_batch_tokens = min(self.max_batch_tokens or len(batch) * longest, half * longest)
        self.oom_splits += 1
        log.warning(
            "reward model out of device memory on %d conversations x %d tokens; split in two,"
            " reward.max_batch_tokens lowered to %d for this actor",
            len(batch),
            longest,
            self.max_batch_tokens,
        )
        return self._forward(batch[:half]) + self._forward(batch[half:])


class VLLMRewardScorer:
    """The same model on vLLM's pooling runner: one `classify` call per batch of chats.

    Its engine dying (`EngineDeadError`; a core in its own process that is gone) sets `failure`
    and ends the actor's process (`exit_if_engine_died`), even while a `classify` waits."""

    def __init__(
        self,
        path: str,
        max_length: int,
        key: str = "reward",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        kv_cache_gib: float | None = None,
        gpu_memory_utilization: float = 0.9,
        extra_kwargs: dict | None = None,
    ):
        import torch
        from transformers import AutoConfig, AutoTokenizer
        from vllm import LLM

        from ...engines.vllm_engine import quiet_loading, watch_core

        on_gpu = torch.cuda.is_available()
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model_config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        max_length = fitted_max_length(max_length, model_config)
        kwargs = dict(
            model=path,
            runner="pooling",
            dtype=resolve_dtype(dtype, on_gpu),
            max_model_len=max_length,
            trust_remote_code=trust_remote_code,
            enforce_eager=not on_gpu,
        )
        if on_gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        self.llm = LLM(**(kwargs | quiet_loading() | dict(extra_kwargs or {})))
        self.max_length = max_length
        self.kind, self.path, self.failure = "vllm", path, None
        self.name = f"{key} (vllm, {path})"
        watch_core(self.llm.llm_engine, self._died, lambda: False)

    def _died(self, err: BaseException) -> None:
        self.failure = err
        exit_if_engine_died({self.name: self})

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def score(self, conversations: list[list[dict[str, str]]]) -> list[float]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        prompts = [
            TokensPrompt(
                prompt_token_ids=self.tokenizer(
                    self.render(messages),
                    add_special_tokens=False,
                    truncation=True,
                    max_length=self.max_length,
                )["input_ids"]
            )
            for messages in conversations
        ]
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            outputs = self.llm.classify(
                prompts, pooling_params=PoolingParams(use_activation=False), use_tqdm=False
            )
        except EngineDeadError as err:
            self.failure = err
            raise
        return [float(out.outputs.probs[0]) for out in outputs]


def load_scorer(config: RewardConfig, key: str = "reward"):
    """The reward model of `config` (at config key `key`) on its engine (transformers
    micro-batches or vLLM pooling)."""
    if config.engine == "vllm":
        return VLLMRewardScorer(
            config.path,
            config.max_length,
            key,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            kv_cache_gib=config.kv_cache_gib,
            gpu_memory_utilization=config.gpu_memory_utilization,
            extra_kwargs=config.extra_kwargs,
        )
    return RewardScorer(
        config.path,
        config.max_length,
        config.micro_batch_size,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        max_batch_tokens=config.max_batch_tokens,
    )


def _turn_ends(messages: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The conversation up to each assistant answer (a leading system message kept)."""
    return [messages[: k + 1] for k, m in enumerate(messages) if m["role"] == "assistant"]


class RewardTagger:
    """Ray Data actor: the reward model loaded once; `__call__` adds the reward columns."""

    def __init__(self, config: RewardConfig, seed: int = 0):
        from ...engines import start_model

        def start(key: str, model) -> RewardScorer | VLLMRewardScorer:
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


TAGGER = Tagger(
    name="reward",
    columns=COLUMNS,
    actor=RewardTagger,
    needs_chat_template=True,
    model_column="reward_model",
)
