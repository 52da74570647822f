"""The dedup step as a Ray task (how it runs on a cluster) gives what it gives in-process."""

from magpie_ray.steps import dedup as dedup_step
from magpie_ray.steps import select as select_step
from magpie_ray.storage import RunStore
from tests.helpers import tagged_rows
from tests.unit.test_global_steps import _config, _vectors, _write_tagged


def test_dedup_as_a_ray_task_matches_the_in_process_step(local_ray, tmp_path):
    cfg = _config(tmp_path)
    on_ray = RunStore(cfg.run_uri)
    _write_tagged(on_ray, tagged_rows(_vectors()), parts=3)
    stats = dedup_step.run_step(cfg, on_ray)
    assert local_ray.is_initialized() and not stats.skipped
    assert (stats.duplicate_clusters, stats.duplicates) == (2, 3)

    in_process = RunStore(str(tmp_path / "in-process"))
    _write_tagged(in_process, tagged_rows(_vectors()), parts=3)
    dedup_step.dedup_run(in_process.run_uri, cfg.dedup)
    columns = ["uuid", "min_similar_uuid", "is_canonical", "repeat_count"]
    assert on_ray.read_parts(on_ray.kept_dir("dedup"), columns=columns).equals(
        in_process.read_parts(in_process.kept_dir("dedup"), columns=columns)
    )
    assert select_step.run_step(cfg, on_ray).kept > 0
