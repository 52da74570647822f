"""An engine that cannot start stops the run after a bounded number of actor starts, with one
line that names the engine's config key, the cause and the setting to change (issue 15)."""

import time

import pytest

from magpie_ray import pipeline
from magpie_ray.engines import EngineStartError, start_failure
from magpie_ray.steps.actor_pools import EngineStartFailed
from tests.helpers import run_uuids, tiny_config


def test_an_engine_that_cannot_start_stops_the_run_with_its_cause_and_fix(
    local_ray, tiny_model_path, tmp_path
):
    cfg = tiny_config(tiny_model_path, tmp_path, run_name="nostart", num_samples=4)
    cfg.engine.kv_cache_gib = 1e-6  # valid (> 0), but no room for a single cache block
    cfg.cluster.actor_start_retries = 1
    started = time.monotonic()
    with pytest.raises(EngineStartFailed) as err:
        pipeline.run(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"engine (vllm, {tiny_model_path}) failed to start: ValueError:")
    assert "Fix: raise engine.kv_cache_gib (CPU) or engine.gpu_memory_utilization (GPU)" in message
    assert time.monotonic() - started < 600, "bounded: two actor starts, not endless restarts"
    kept, dropped = run_uuids(tmp_path / "nostart")
    assert not kept and not dropped


def test_the_start_failure_line_is_found_inside_rays_error_text():
    inner = EngineStartError("judge (vllm, /m) failed to start: OSError: gone. Fix: check the path")
    wrapped = RuntimeError(f"ActorDiedError: ...\n  File x\nmagpie_ray.engines.{inner!r}\n")
    wrapped.__cause__ = RuntimeError(
        f"Traceback ...\nmagpie_ray.engines.EngineStartError: {inner}\n"
    )
    assert start_failure(wrapped) == str(inner)
    assert start_failure(RuntimeError("some other failure")) is None


def test_an_engine_not_ready_within_start_timeout_s_stops_the_run_naming_the_key(
    local_ray, tiny_model_path, tmp_path
):
    cfg = tiny_config(tiny_model_path, tmp_path, run_name="slowstart", num_samples=4)
    cfg.engine.start_timeout_s = 0.001  # the real engine's start takes seconds
    cfg.cluster.actor_start_retries = 1
    with pytest.raises(EngineStartFailed) as err:
        pipeline.run(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"engine (vllm, {tiny_model_path}) failed to start: TimeoutError: not ready within"
        " engine.start_timeout_s=0.001 s. Fix: raise engine.start_timeout_s if the model only"
        " loads slowly (large weights, slow storage, many GPUs), else see the actor's log for"
        " where the start hangs"
    )
    kept, dropped = run_uuids(tmp_path / "slowstart")
    assert not kept and not dropped
