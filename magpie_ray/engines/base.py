"""The engine interface: requests in (token ids + a `SamplingSpec`), Futures of `Completion`s out.

An engine takes a prompt as token ids (the caller renders and encodes it, always with
`add_special_tokens=False`, so a template's BOS is never doubled) and a `SamplingSpec`, and
`submit` returns a Future of its `Completion`. Any number of threads may submit at once: one
background thread per engine owns the model and keeps it fed (vLLM: continuous batching over
every request in flight; HF: micro-batches of waiting requests), so a caller that submits a
response the moment its instruction is done never waits for other rows' long answers. Stop
strings and stop token ids are excluded from `text`; `finish_reason` is "stop" or "length".
A spec with `n` > 1 samples n continuations of one prompt (sample j seeded with seed + j, as
vLLM does); the Completion then describes sample 0 and `samples` holds all n.
`banned_token_ids` may not be sampled at all (engines apply them to every step of the request;
callers that want a first-token-only ban ask for one token, then continue without the ban).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float
    max_tokens: int
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False  # benchmarks only: exact lengths, stops ignored
    # Constrained decoding: ("json", schema as JSON text) or ("regex", pattern). vLLM enforces
    # it; the HF engine samples unconstrained, so callers must still parse defensively.
    structured: tuple[str, str] | None = None
    n: int = 1
    banned_token_ids: tuple[int, ...] = ()
    repetition_penalty: float = 1.0  # vLLM's rule, over prompt and output tokens


@dataclass(frozen=True)
class Completion:
    text: str
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: str  # "stop" | "length"
    token_ids: tuple[int, ...] = ()  # generated ids (stop ids and text past a stop included)
    samples: tuple[Completion, ...] = ()  # all n samples when the spec asked for n > 1


class Engine(Protocol):
    tokenizer: Any

    def submit(self, prompt: list[int], spec: SamplingSpec) -> Future: ...

    def generate(
        self, prompts: Sequence[list[int]], specs: Sequence[SamplingSpec]
    ) -> list[Completion]: ...

    def close(self) -> None: ...


class BackgroundEngine:
    """Shared shell of both engines: a request queue served by one thread that owns the model.

    Subclasses implement `_serve(new_requests) -> bool`: take the newly queued
    (prompt, spec, future) triples, advance the model, resolve finished futures, and say whether
    work is still in flight (then the loop calls again at once instead of blocking on the queue).
    """

    def __init__(self) -> None:
        # Seconds the model thread spent advancing the model (not waiting for requests): the
        # engine's busy time, which the generate step reports against its wall time.
        self.busy_seconds = 0.0
        self.steps = 0  # model advances (vLLM: engine steps); tokens / steps = mean batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failed: BaseException | None = None
        self._stopped = False
        # Every future handed to _serve, for failing them if the engine dies; done ones are
        # pruned when the list has doubled, not every step (a step must not cost O(in flight)).
        self._in_flight: list[Future] = []
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()

    def submit(self, prompt: list[int], spec: SamplingSpec) -> Future:
        future: Future = Future()
        self._queue.put((list(prompt), spec, future))
        if self._failed is not None:  # after the put: a request queued as it died fails too
            self._fail(self._failed)
        return future

    @property
    def failure(self) -> BaseException | None:
        """What killed the engine (its model thread stopped, or `_fail` was called), or None
        while it serves. A dead engine fails every request: its actor should exit."""
        return self._failed

    def generate(
        self, prompts: Sequence[list[int]], specs: Sequence[SamplingSpec]
    ) -> list[Completion]:
        futures = [self.submit(p, s) for p, s in zip(prompts, specs, strict=True)]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _serve(self, new_requests: list) -> bool:
        raise NotImplementedError

    def _loop(self) -> None:
        busy = False
        prune_at = 1024
        try:
            while not self._stopped and self._failed is None:
                new = [] if busy else [self._queue.get()]
                while True:
                    try:
                        new.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                new = [item for item in new if item is not None]
                self._in_flight += [f for *_, f in new]
                if len(self._in_flight) >= prune_at:
                    self._in_flight = [f for f in self._in_flight if not f.done()]
                    prune_at = max(1024, 2 * len(self._in_flight))
                started = time.perf_counter()
                busy = self._serve(new)
                self.busy_seconds += time.perf_counter() - started
                self.steps += 1
        except BaseException as err:  # every waiting caller gets the error, not a hang
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        """The engine is dead (any thread may say so): every request in flight or queued, and
        every later one, fails with the first cause."""
        if self._failed is None:
            self._failed = err
        for future in list(self._in_flight):
            _set_exception(future, self._failed)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                _set_exception(item[2], self._failed)


def _set_exception(future: Future, err: BaseException) -> None:
    try:
        future.set_exception(err)
    except InvalidStateError:  # resolved meanwhile by the model thread
        pass


@dataclass(frozen=True)
class EngineSettings:
    """What an engine needs to load a model; built from ModelConfig + EngineConfig."""

    kind: str
    model_path: str
    dtype: str = "auto"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1  # > 1: vLLM's ray executor, in the actor's placement group
    trust_remote_code: bool = False
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None
    enforce_eager: bool = False
    max_num_seqs: int = 256
    hf_batch_size: int = 16
    seed: int = 0
    extra_kwargs: dict = field(default_factory=dict)  # more vLLM engine arguments, passed as is
    # Seconds the engine may take to become ready before its start counts as failed (None: no
    # limit); from engine.start_timeout_s.
    start_timeout_s: float | None = None


def resolve_dtype(dtype: str, on_gpu: bool) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_gpu else "float32"
