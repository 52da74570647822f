import pytest

from magpie_ray.engines import load_engine
from magpie_ray.engines.base import EngineSettings


@pytest.fixture(scope="session")
def engines(tiny_model_path):
    """Both engines on the tiny model, in this process, loaded once per session."""
    return {
        kind: load_engine(
            EngineSettings(
                kind=kind, model_path=str(tiny_model_path), max_model_len=512, kv_cache_gib=0.25
            )
        )
        for kind in ("vllm", "hf")
    }
