import pyarrow as pa
import pytest

from magpie_ray.storage import DROPPED_SCHEMA, RunStore, part_name


def _dropped(uuids):
    rows = [
        {"uuid": u, "index": i, "step": "generate", "reason": "r", "detail": ""}
        for i, u in enumerate(uuids)
    ]
    return pa.Table.from_pylist(rows, schema=DROPPED_SCHEMA)


def test_part_names_are_deterministic_in_the_batch(tmp_path):
    assert part_name(4, ["a", "b"]) == part_name(4, ["a", "b"])
    assert part_name(4, ["a", "b"]) != part_name(4, ["a", "c"])
    assert part_name(4, ["a"]).startswith("part-000000004-")


def test_done_uuids_cover_kept_and_dropped_parts(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    assert store.done_uuids("generate") == set()
    store.write_part(store.dropped_dir("generate"), part_name(0, ["a"]), _dropped(["a"]))
    store.write_part(store.kept_dir("generate"), part_name(1, ["b", "c"]), _dropped(["b", "c"]))
    assert store.done_uuids("generate") == {"a", "b", "c"}
    assert (tmp_path / "run" / "generated").is_dir()


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    store = RunStore(str(tmp_path / "run"))

    def explode(tmp):
        with open(tmp, "w") as f:
            f.write("half a parquet file")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        store.write_atomic(store.kept_dir("generate") + "/part-000000000-x.parquet", explode)
    assert list((tmp_path / "run" / "generated").iterdir()) == []
    assert store.done_uuids("generate") == set()


def test_temporary_files_are_never_read_as_parts(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.write_part(store.kept_dir("generate"), "part-000000000-a.parquet", _dropped(["a"]))
    # What a killed writer leaves: a hidden temp file; readers must ignore it.
    (tmp_path / "run" / "generated" / ".part-000000004-b.parquet.1234.tmp").write_bytes(b"junk")
    assert store.done_uuids("generate") == {"a"}
    assert store.read_parts(store.kept_dir("generate")).num_rows == 1


def test_store_pickles_as_its_uri_and_accepts_file_uris(tmp_path):
    import pickle

    store = RunStore(f"file://{tmp_path}/run")
    store.write_text("config.yaml", "a: 1\n")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.run_uri == store.run_uri
    assert (tmp_path / "run" / "config.yaml").read_text() == "a: 1\n"


def test_a_global_step_is_done_only_for_the_inputs_and_config_it_recorded(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    out = store.kept_dir("dedup")
    made_from = {"inputs": [["part-a.parquet", 10]], "config": {"k": 5, "groups": ("x",)}}
    assert store.finished_stats(out, made_from) is None
    store.write_manifest(out, {"made_from": made_from, "stats": {"rows": 10}})
    assert store.finished_stats(out, made_from) == {"rows": 10}, "tuples compare as JSON lists"
    assert store.finished_stats(out, {**made_from, "config": {"k": 6}}) is None
    store.clear_manifest(out)
    assert store.finished_stats(out, made_from) is None
    assert store.kept_dir("tag").endswith("/tagged") and store.kept_dir("select").endswith(
        "/selected"
    )


def test_remove_parts_keeps_only_the_named_ones(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    out = store.kept_dir("select")
    for name in ("part-1.parquet", "part-2.parquet"):
        store.write_part(out, name, _dropped([name]))
    store.remove_parts(out, {"part-2.parquet"})
    assert [p.rsplit("/", 1)[1] for p in store.part_files(out)] == ["part-2.parquet"]
    assert store.fingerprint(out)[0][0] == "part-2.parquet"
