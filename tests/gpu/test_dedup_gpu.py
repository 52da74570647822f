"""The gpu-knn dedup plan on a real GPU agrees with the CPU search (needs faiss-gpu + CUDA)."""

import numpy as np
import pytest

from magpie_ray.config import DedupConfig
from magpie_ray.near_duplicates import find_near_duplicates, gpu_available
from tests.unit.test_dedup import _planted

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not gpu_available(), reason="faiss without GPU support, or no GPU visible")
def test_gpu_plan_keeps_the_same_rows_as_the_cpu_search():
    uuids, vectors = _planted()
    cpu = find_near_duplicates(uuids, vectors, DedupConfig(k=10), gpu=False)
    gpu = find_near_duplicates(uuids, vectors, DedupConfig(k=10), gpu=True)
    assert gpu.plan.kind == "gpu-knn"
    assert gpu.is_canonical.tolist() == cpu.is_canonical.tolist()
    assert gpu.min_similar_uuid == cpu.min_similar_uuid
    np.testing.assert_allclose(gpu.min_neighbor_distance, cpu.min_neighbor_distance, atol=1e-4)
