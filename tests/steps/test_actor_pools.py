"""Actor pools on a real local Ray: a fixed pool keeps its size, an autoscaling one grows."""

import pytest

from magpie_ray.config import ConfigError
from magpie_ray.steps.actor_pools import map_with_actors
from magpie_ray.testing import PidStamper


def _pids(ray, **sizes) -> set[int]:
    ds = ray.data.range(48, override_num_blocks=48)
    ds = map_with_actors(
        ds,
        PidStamper,
        {"delay_s": 0.3},
        concurrency=1,
        num_cpus=0.1,
        num_gpus=0,
        batch_size=None,
        **sizes,
    )
    return set(ds.to_pandas()["pid"].tolist())


def test_a_fixed_pool_keeps_its_size_and_an_autoscaling_pool_grows_to_max_actors(local_ray):
    assert len(_pids(local_ray, num_actors=1)) == 1
    grown = _pids(local_ray, num_actors=1, max_actors=3)
    assert 1 < len(grown) <= 3, f"{len(grown)} actors: the pool did not autoscale within 1..3"


def test_max_actors_below_num_actors_is_a_config_error():
    from magpie_ray.validation import validate_static
    from tests.unit.test_config import _compose

    with pytest.raises(ConfigError) as err:
        validate_static(_compose("cluster.num_actors=4", "cluster.max_actors=2"))
    assert "cluster.max_actors=2: must be >= cluster.num_actors=4" in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate_static(_compose("judge.pool.num_actors=2", "judge.pool.max_actors=1"))
    assert "judge.pool.max_actors=1" in str(err.value)
    validate_static(_compose("cluster.num_actors=2", "cluster.max_actors=8"))
