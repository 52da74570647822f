"""A dead engine fails every request and takes its actor with it; a start that runs over
its `start_timeout_s` fails like any start failure (the engines here are stand-ins; the
real engines and actors: tests/e2e/test_engine_failures.py)."""

import dataclasses
import logging
import sys
import threading
import types

import pytest

from magpie_ray.engines import ENGINES, EngineStartError, lifecycle, load_engine, start_model
from magpie_ray.engines.base import BackgroundEngine, Completion, EngineSettings, SamplingSpec
from magpie_ray.engines.lifecycle import engine_death_exits
from magpie_ray.steps.generate.generation import TIMEOUT_KEY

SPEC = SamplingSpec(temperature=0.0, max_tokens=4)


class StuckEngine(BackgroundEngine):
    """A model thread that never returns from its step, as vLLM's sync client's does when its
    core process is gone; its first request alone is answered."""

    tokenizer = None

    def __init__(self) -> None:
        self.stuck = threading.Event()
        self.answered = 0
        super().__init__()

    def _serve(self, new_requests: list) -> bool:
        for _, _, future in new_requests:
            if self.answered == 0:
                self.answered = 1
                future.set_result(Completion("ok", 1, 1, "stop"))
                return False
        self.stuck.set()
        threading.Event().wait()  # forever
        return False


def test_a_dead_engine_fails_requests_in_flight_queued_and_later_even_with_its_thread_stuck():
    engine = StuckEngine()
    assert engine.submit([1], SPEC).result(timeout=10).text == "ok"
    assert engine.failure is None
    in_flight = engine.submit([2], SPEC)
    assert engine.stuck.wait(timeout=10)
    queued = engine.submit([3], SPEC)
    dead = RuntimeError("EngineCore encountered an issue")
    engine._fail(dead)  # what the vLLM engine's core watch does
    assert engine.failure is dead
    for future in (in_flight, queued, engine.submit([4], SPEC)):
        assert future.exception(timeout=10) is dead


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch):
    """os._exit, recorded instead of ending this process."""
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(lifecycle.os, "_exit", fake_exit)
    return codes


def test_an_actor_call_whose_engine_died_logs_it_and_ends_the_process(exits, caplog):
    engine = StuckEngine()
    engines = {"engine (vllm, /models/x)": engine, "generate.base (hf, /models/b)": None}
    with engine_death_exits(engines):
        assert engine.submit([1], SPEC).result(timeout=10).text == "ok"
    assert exits == []
    caplog.set_level(logging.ERROR)
    with pytest.raises(Exited), engine_death_exits(engines):
        future = engine.submit([2], SPEC)
        engine.stuck.wait(timeout=10)
        engine._fail(RuntimeError("EngineCore encountered an issue"))
        future.result(timeout=10)
    assert exits == [1]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith(
        "engine (vllm, /models/x) died mid-run (RuntimeError: EngineCore encountered an issue);"
        " exiting this actor"
    )
    assert "\n" not in line
    # The next call on that actor (had it lived) would exit before doing anything.
    with pytest.raises(Exited), engine_death_exits(engines):
        raise AssertionError("a call on a dead engine must not run")


def test_other_errors_of_a_call_pass_through_while_the_engine_lives(exits):
    engine = StuckEngine()
    with pytest.raises(ValueError, match="a bad row"), engine_death_exits({"engine": engine}):
        raise ValueError("a bad row")
    assert exits == []


def test_a_start_that_runs_over_start_timeout_s_is_a_start_failure_naming_the_key(monkeypatch):
    gate = threading.Event()

    class SlowEngine(StuckEngine):
        def __init__(self, settings):
            gate.wait(timeout=30)
            super().__init__()

    module = types.ModuleType("magpie_ray.engines.slow_stand_in")
    module.SlowEngine = SlowEngine
    monkeypatch.setitem(sys.modules, module.__name__, module)
    slow = dataclasses.replace(ENGINES["hf"], module="slow_stand_in", engine="SlowEngine")
    monkeypatch.setitem(ENGINES, "slow", slow)
    settings = EngineSettings(kind="slow", model_path="/models/x", start_timeout_s=0.2)
    try:
        # The generate step's engines share engine.start_timeout_s; a tagger has its own.
        with pytest.raises(EngineStartError) as err:
            load_engine(settings, "generate.responder", TIMEOUT_KEY)
        with pytest.raises(EngineStartError) as judge_err:
            load_engine(settings, "judge")
    finally:
        gate.set()
    assert str(err.value) == (
        "generate.responder (slow, /models/x) failed to start: TimeoutError: not ready within"
        " engine.start_timeout_s=0.2 s. Fix: raise engine.start_timeout_s if the model only"
        " loads slowly (large weights, slow storage, many GPUs), else see the actor's log for"
        " where the start hangs"
    )
    assert "not ready within judge.start_timeout_s=0.2 s. Fix: raise judge.start_timeout_s" in (
        str(judge_err.value)
    )


def test_a_tagging_model_that_loads_too_slowly_or_fails_names_its_own_key():
    gate = threading.Event()
    try:
        with pytest.raises(EngineStartError) as slow:
            start_model("embedder", "sentence-transformers", "/m/e", gate.wait, 0.1)
    finally:
        gate.set()
    assert str(slow.value).startswith(
        "embedder (sentence-transformers, /m/e) failed to start: TimeoutError: not ready within"
        " embedder.start_timeout_s=0.1 s. Fix: raise embedder.start_timeout_s"
    )

    def missing():
        raise OSError("/m/p does not appear to have a file named config.json")

    with pytest.raises(EngineStartError) as failed:
        start_model("reward.preference", "hf", "/m/p", missing, 60, "reward.start_timeout_s")
    assert str(failed.value) == (
        "reward.preference (hf, /m/p) failed to start: OSError: /m/p does not appear to have a"
        " file named config.json. Fix: check the model path"
    )
