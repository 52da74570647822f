"""Reward models as scorers: a conversation in, one number out, batched.

`HFRewardScorer` runs a Hugging Face sequence-classification model with transformers on one
device, in length-sorted micro-batches (padding stays small) that split in two when the device
runs out of memory. `VLLMRewardScorer` hands every conversation of a call to vLLM's pooling
runner, which batches them itself (raw logits, no activation); its engine dying ends its actor.
Single-logit models (FsfairX-LLaMA3-RM, Skywork) score with logit 0; multi-objective ArmoRM
(trust_remote_code) with its `score` output. Conversations are rendered by the reward model's
own chat template.
"""

from __future__ import annotations

import logging

from .base import resolve_dtype
from .lifecycle import exit_if_engine_died
from .registry import ENGINES, scorer_kind

log = logging.getLogger(__name__)


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


class HFRewardScorer:
    """A sequence-classification reward model (transformers) on one device; scores chats."""

    @classmethod
    def from_config(cls, config, key: str = "reward") -> HFRewardScorer:
        """From a reward model's config (`RewardConfig` or its preference model's)."""
        return cls(
            config.path,
            config.max_length,
            config.micro_batch_size,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            max_batch_tokens=config.max_batch_tokens,
        )

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
        self.kind, self.path, self.failure = scorer_kind("HFRewardScorer"), path, None
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

    @classmethod
    def from_config(cls, config, key: str = "reward") -> VLLMRewardScorer:
        """From a reward model's config at config key `key`."""
        return cls(
            config.path,
            config.max_length,
            key,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            kv_cache_gib=config.kv_cache_gib,
            gpu_memory_utilization=config.gpu_memory_utilization,
            extra_kwargs=config.extra_kwargs,
        )

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

        from .vllm_engine import quiet_loading, watch_core

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
        self.kind, self.path, self.failure = scorer_kind("VLLMRewardScorer"), path, None
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


def load_scorer(config, key: str = "reward"):
    """The reward model of `config` (at config key `key`) on the scorer of its engine kind
    (`config.engine`, from the registry)."""
    return globals()[ENGINES[str(config.engine)].scorer].from_config(config, key)
