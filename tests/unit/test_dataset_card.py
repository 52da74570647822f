"""The dataset card (exports/README.md): licenses carried from the models, the funnel from the
run's manifests, statistics of the kept rows on known inputs, and a card that huggingface_hub
and `datasets` read back, on a hand-made run folder (no Ray, no model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from magpie_ray.config import Condition, Config, ConfigError, FilterConfig, ModelFields
from magpie_ray.dataset_card import (
    card_configs,
    hub_repo_problems,
    languages,
    size_category,
    upload_command,
)
from magpie_ray.funnel import read_funnel
from magpie_ray.kept_stats import KeptStats, distribution, kept_stats
from magpie_ray.licenses import dataset_license, model_license
from magpie_ray.steps import export
from magpie_ray.steps.select import select_run
from magpie_ray.storage import RunStore
from magpie_ray.validation import validate_static
from tests.helpers import assert_card_reads_back, card_funnel, tagged_rows, tagged_table


def test_size_categories_follow_the_hubs_bounds():
    assert size_category(0) == "n<1K"
    assert size_category(999) == "n<1K"
    assert size_category(1000) == "1K<n<10K"
    assert size_category(300_000) == "100K<n<1M"
    assert size_category(3_000_000) == "1M<n<10M"


def test_configs_are_one_file_kind_jsonl_first():
    assert card_configs(["sharegpt", "messages", "dpo", "parquet"]) == {
        "sharegpt": "sharegpt.jsonl",
        "messages": "messages.jsonl",
        "dpo": "dpo.jsonl",
    }
    assert card_configs(["parquet"]) == {"parquet": "data.parquet"}


def test_languages_at_one_percent_or_more_in_lowercase():
    kept = KeptStats(rows=1000, labels={"language": {"EN": 950, "ZH": 41, "FR": 9, "null": 0}})
    assert languages(kept) == ["en", "zh"]


def test_hub_repo_ids_are_checked_as_the_hub_does():
    assert hub_repo_problems("org/name") == []
    for bad in ("name", "org/na me", "org/a/b", "org/a--b"):
        assert hub_repo_problems(bad), bad
    command = upload_command("org/name", "/data/run/exports")
    assert command.startswith("hf upload org/name /data/run/exports . --repo-type=dataset")
    assert "--exclude=_manifest.json" in command


def test_a_model_folders_own_card_wins_over_the_config(tmp_path):
    folder = tmp_path / "models--Qwen--Qwen2-72B-Instruct" / "snapshots" / ("a" * 40)
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(
        "---\nlicense: other\nlicense_name: tongyi-qianwen\n"
        "license_link: https://huggingface.co/Qwen/Qwen2-72B-Instruct/blob/main/LICENSE\n"
        "---\n# Qwen2\n"
    )
    declared = ModelFields(name="qwen2-72b", path=str(folder), license="apache-2.0")
    found = model_license("instructions and responses", declared)
    assert (found.license, found.name, found.source) == ("other", "tongyi-qianwen", "model card")
    assert found.revision == "a" * 40
    assert dataset_license([found]) == {
        "license": "other",
        "license_name": "tongyi-qianwen",
        "license_link": "https://huggingface.co/Qwen/Qwen2-72B-Instruct/blob/main/LICENSE",
    }


def test_the_config_declares_it_else_other(tmp_path):
    (tmp_path / "README.md").write_text("# no front matter\n")
    declared = model_license("instructions", ModelFields(path=str(tmp_path), license="llama3.1"))
    assert (declared.license, declared.source) == ("llama3.1", "config")
    unknown = model_license("responses", ModelFields(name="x", path=str(tmp_path)))
    assert (unknown.license, unknown.source) == ("other", "unknown")
    # an instruction model and a responder that differ are both named
    assert dataset_license([declared, unknown]) == {"license": ["llama3.1", "other"]}


def test_distribution_percentiles_on_known_values():
    dist = distribution(np.arange(1, 101, dtype=np.float64))
    assert dist.count == 100 and dist.mean == 50.5
    assert dist.percentiles[50] == 50.5 and dist.percentiles[5] == pytest.approx(5.95)
    assert distribution(np.zeros(0)).mean is None


def _kept(rows: int = 40) -> list[dict]:
    """The rows the test recipe keeps: difficulty <= medium, not cut at max_tokens."""
    easy = ("very easy", "easy", "medium")
    return [
        r
        for r in tagged_rows(np.eye(rows, 8))
        if r["difficulty"] in easy and r["response_finish_reason"] != "length"
    ]


def _run_folder(tmp_path: Path, rows: int = 40) -> tuple[Config, RunStore]:
    """generated/ and tagged/ and deduped/ of `tagged_rows`, a dedup manifest, two rows dropped
    at generation; then the real select and export steps (and so the card)."""
    cfg = Config(output_dir=str(tmp_path), run_name="card")
    cfg.model.license = "apache-2.0"
    cfg.generate.num_samples = rows + 2
    cfg.filter = FilterConfig(
        name="test-recipe",
        conditions=[Condition(column="difficulty", op="<=", value="medium")],
    )
    store = RunStore(cfg.run_uri)
    table = tagged_table(tagged_rows(np.eye(rows, 8, dtype=np.float32)))
    for step in ("generate", "tag", "dedup"):
        for start in range(0, rows, 16):
            part = table.slice(start, 16)
            store.write_part(store.kept_dir(step), f"part-{start:09d}.parquet", part)
    store.write_part(
        store.dropped_dir("generate"),
        "part-000000040.parquet",
        pa.table(
            {
                "uuid": ["d1", "d2"],
                "index": [40, 41],
                "step": ["generate"] * 2,
                "reason": ["empty_instruction"] * 2,
                "detail": [None, None],
            }
        ),
    )
    dedup_stats = {"rows": rows, "duplicates": 3, "duplicate_clusters": 2}
    store.write_manifest(store.kept_dir("dedup"), {"made_from": {}, "stats": dedup_stats})
    select_run(store, cfg.filter)
    return cfg, store


def test_the_funnel_reads_the_files_and_manifests(tmp_path):
    cfg, store = _run_folder(tmp_path)
    export.run_step(cfg, store, overrides=["run_name=card"])
    funnel = read_funnel(store, cfg.generate.num_samples)
    kept = _kept()
    assert funnel.requested == 42 and funnel.generated == 40
    assert funnel.generate_drops == {"empty_instruction": 2}
    assert (funnel.tagged, funnel.deduped, funnel.near_duplicates) == (40, 40, 3)
    assert funnel.selected_from == 40 and funnel.kept == len(kept)
    assert sum(funnel.select_drops.values()) == 40 - len(kept)
    with_pair = sum(1 for r in kept if r["chosen"])
    assert funnel.exports["dpo.jsonl"] == with_pair > 0
    assert funnel.left_out["dpo.jsonl"] == len(kept) - with_pair
    stages = dict(funnel.stages())
    assert stages["requested"] == 42 and stages["kept by the filter"] == len(kept)


def test_kept_statistics_on_known_rows(tmp_path):
    cfg, store = _run_folder(tmp_path)
    stats = kept_stats(store, store.kept_dir("select"))
    kept = _kept()
    assert stats.rows == len(kept)
    assert stats.labels["difficulty"] == {
        d: sum(1 for r in kept if r["difficulty"] == d) for d in {r["difficulty"] for r in kept}
    }
    lengths = np.array([len(r["response"]) for r in kept], dtype=np.float64)
    assert stats.lengths["response"].percentiles[50] == np.percentile(lengths, 50)
    rewards = np.array([r["instruct_reward"] for r in kept if r["instruct_reward"] is not None])
    assert stats.reward.mean == pytest.approx(rewards.mean())
    assert [s["uuid"] for s in stats.samples] == [r["uuid"] for r in kept[:3]]
    assert [label for label, _, _ in stats.shares("difficulty")] == ["very easy", "easy", "medium"]


def test_the_card_is_read_by_huggingface_hub_and_datasets(tmp_path):
    cfg, store = _run_folder(tmp_path)
    stats = export.run_step(cfg, store, config_yaml="run_name: card\n", overrides=["a=1", "b=x y"])
    exports = tmp_path / "card" / "exports"
    assert stats.card == str(exports / "README.md")
    card = assert_card_reads_back(exports, tmp_path / "hf-cache")
    assert card.data.license == "apache-2.0"
    assert card.data.language == ["en"]
    assert card.data.size_categories == ["n<1K"]
    assert sorted(c["config_name"] for c in card.data.configs) == ["dpo", "messages", "sharegpt"]
    # the body: the funnel as read_funnel gives it, the command, the config beside it
    assert card_funnel(card.text) == read_funnel(store, cfg.generate.num_samples).stages()
    assert "python -m magpie_ray a=1 'b=x y'" in card.text
    assert (exports / "config.yaml").read_text() == "run_name: card\n"
    assert "data.parquet" in card.text and 'load_dataset("parquet"' in card.text
    assert "@article{xu2024magpie" in card.text
    assert len(re.findall(r"^### \d\. `u-0-", card.text, flags=re.M)) == 3


def test_no_card_when_it_is_off(tmp_path):
    cfg, store = _run_folder(tmp_path)
    cfg.export.card = False
    stats = export.run_step(cfg, store)
    assert stats.card is None and not (tmp_path / "card" / "exports" / "README.md").exists()
    assert json.loads((tmp_path / "card" / "exports" / "_manifest.json").read_text())["stats"]


def _problems(cfg: Config) -> str:
    try:
        validate_static(cfg)
    except ConfigError as err:
        return str(err)
    return ""


def test_a_malformed_hub_repo_fails_at_preflight(tmp_path):
    cfg = Config(output_dir=str(tmp_path))
    cfg.export.hub_repo = "my dataset"
    assert "export.hub_repo='my dataset' is not a Hub dataset id" in _problems(cfg)
    cfg.export.hub_repo = "org/name"
    assert "hub_repo" not in _problems(cfg)


def test_an_export_without_rows_is_listed_but_no_config(tmp_path):
    cfg, store = _run_folder(tmp_path)
    # rows with a preference pair (every 5th) all have input_quality "very poor"
    cfg.filter = FilterConfig(
        name="no-pairs", conditions=[Condition(column="input_quality", op=">=", value="poor")]
    )
    select_run(store, cfg.filter)
    export.run_step(cfg, store)
    exports = tmp_path / "card" / "exports"
    assert (exports / "dpo.jsonl").read_text() == ""
    card = assert_card_reads_back(exports, tmp_path / "hf-cache")
    assert sorted(c["config_name"] for c in card.data.configs) == ["messages", "sharegpt"]
    assert "| dpo.jsonl | dpo | 0 | empty, so no config |" in card.text


def test_every_preset_and_recipe_names_its_models_license():
    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf"
    checked = 0
    for path in sorted([*conf.glob("recipe/*.yaml"), *conf.glob("model/*.yaml")]):
        data = yaml.safe_load(path.read_text())
        model = data.get("model", {}) if path.parent.name == "recipe" else data
        if "name" not in model or model.get("path") == "???":  # no model of its own (local)
            continue
        checked += 1
        assert model.get("license"), path
        if model["license"] == "other":
            assert model.get("license_name") and model.get("license_link"), path
    assert checked >= 30


def test_the_card_gives_what_the_run_cost(tmp_path):
    from magpie_ray.costs import StepRecord, record

    cfg, store = _run_folder(tmp_path)
    cfg.cluster.gpu_hour_usd = 3.0
    record(store, StepRecord("generate", 3600.0, actors=2, gpu_s=2 * 3600.0, output_tokens=10**6))
    stats = export.run_step(cfg, store)
    text = Path(stats.card).read_text()
    assert "### Compute" in text and "| GPU-hours | 2.000 |" in text
    assert "| cost at $3/GPU-hour | $6.00 |" in text
    assert "| per million output tokens | $6.00 |" in text
    assert f"| per thousand kept rows | ${6.0 / len(_kept()) * 1000:,.2f} |" in text
