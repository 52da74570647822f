"""The row pool: every row an engine actor has in flight, driven by one thread.

Rows are generators (`rows.generate_row`) that yield engine Futures; a finished Future only
queues its row, and the pool's thread resumes it, so the engine's thread never does row work
and a row's next request is submitted the moment its last one is done. `RowPool` is the one
driver: the generate step's actors and `generate_rows` (tests, benchmarks) both use it.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ...config import GenerateConfig
from ...engines.base import Engine
from ...families import templates
from .base_answers import BaseAnswerer
from .chat_model import ChatModel, chat_model
from .rows import RowSteps, batch_result, generate_row, row_context
from .schema import BatchResult


@dataclass(frozen=True)
class _Returned:
    value: Any


def _advance(step: RowSteps, done: Future | None) -> Future | _Returned:
    """Resume a row with its last Future's outcome (None: start it); its next Future, or its
    return value. A finished Future only queues its row (the engine thread does nothing else);
    the caller's thread then does the row's CPU work (templates, tokenizing) in here."""
    try:
        if done is None:
            return next(step)
        if done.exception() is not None:
            return step.throw(done.exception())
        return step.send(done.result())
    except StopIteration as finished:
        return _Returned(finished.value)


class RowPool:
    """Every row an actor has in flight, advanced by one driver thread, and handed back to
    callers in the order the rows finish, whichever call brought them.

    `run(steps)` adds a call's rows and returns as many finished results as it added; calls
    are served first come, first served. So a call returns once that many rows have finished,
    not when its own longest row has: the rows in flight stay close to the number the actor
    was given, and the engine does not drain while every batch waits for its slowest row (the
    reference's batch-and-wait idling, one level up). The results of all calls together are
    exactly the rows of all calls. A row that raises hands its exception to the call it would
    have been given to.
    """

    def __init__(self) -> None:
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._claims: collections.deque = collections.deque()  # open _Claims, oldest first
        self._thread = threading.Thread(target=self._loop, name="RowPool", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """End the driver thread once the rows queued before this call are advanced."""
        self._ready.put(None)
        self._thread.join(timeout=30)

    def run(self, steps: list[RowSteps]) -> list:
        if not steps:
            return []
        claim = _Claim(len(steps))
        with self._lock:
            self._claims.append(claim)
        for step in steps:
            self._ready.put((step, None))
        with self._lock:
            while len(claim.results) < claim.wanted:
                self._lock.wait()
        if claim.error is not None:
            raise claim.error
        return claim.results

    def _loop(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            step, done = item
            try:
                nxt = _advance(step, done)
            except BaseException as err:  # noqa: BLE001 - handed to a caller, which raises it
                self._finish(None, err)
                continue
            if isinstance(nxt, _Returned):
                self._finish(nxt.value, None)
            else:
                nxt.add_done_callback(lambda f, step=step: self._ready.put((step, f)))

    def _finish(self, result, error: BaseException | None) -> None:
        with self._lock:
            claim = self._claims[0]
            claim.results.append(result)
            if error is not None and claim.error is None:
                claim.error = error
            if len(claim.results) == claim.wanted:
                self._claims.popleft()
                self._lock.notify_all()


@dataclass
class _Claim:
    wanted: int
    results: list = dataclasses.field(default_factory=list)
    error: BaseException | None = None


def generate_rows(
    engine: Engine,
    family: templates.Family,
    rows: Sequence[dict],
    cfg: GenerateConfig,
    model_name: str,
    engine_kind: str,
    max_model_len: int,
    base: BaseAnswerer | None = None,
    responder: ChatModel | None = None,
) -> BatchResult:
    """Every turn of `rows` (seed rows) on `engine` (and `responder`, when another model
    answers); pure apart from the engine calls.

    Rows advance side by side in a `RowPool`, each as soon as its last engine call is done, so
    a row's response is submitted the moment its instruction is done and the engine never waits
    for the slowest row of the batch. Optional row keys `response_max_tokens` and `ignore_eos`
    override the response sampling per row (benchmark workloads use them).
    """
    thinking = cfg.response.thinking if responder is None else None
    generator = chat_model(engine, family, model_name, engine_kind, max_model_len, thinking)
    ctx = row_context(generator, cfg, base, responder)
    pool = RowPool()
    try:
        return batch_result(pool.run([generate_row(ctx, row) for row in rows]))
    finally:
        pool.close()
