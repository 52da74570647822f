"""The dataset card: `exports/README.md`, a Hugging Face dataset card, and `exports/config.yaml`
(the run's config, credentials redacted) beside it.

Front matter, written with the libraries that read it (huggingface_hub's `DatasetCardData`,
datasets' `MetadataConfigs` and `DatasetInfosDict`):

    license             from the models that wrote the rows (`licenses.py`)
    language            the kept rows' instruction languages at 1% or more
    task_categories     text-generation; size_categories from the kept rows
    tags                synthetic, magpie, magpie-ray
    configs             one per export file of one kind: `datasets` builds every config of a
                        folder with the first config's file builder (JSON or Parquet), so the
                        JSONL exports are the configs (name = export format) and data.parquet
                        is named in the body with its own load call; Parquet alone: its config.
                        A file without rows is no config (`datasets` cannot load it)
    dataset_info        each config's features (the JSONL formats' declared record schema,
                        `export_formats.py`; data.parquet's own schema) and row count

The body (`card_body.py`) holds the models, engine and sampling per stage, the pre-query
template, the row funnel (`funnel.py`: the same reader as the run summary and the report),
statistics of the kept rows (`kept_stats.py`, part by part), three sample rows, the command
that reproduces the run, and the Magpie citation. Nothing goes over the network:
`export.hub_repo` only makes the summary print the upload command (`upload_command`).
"""

from __future__ import annotations

import posixpath
import shlex
import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from .costs import cost_rows, read_costs
from .diversity import diversity_rows, read_diversity
from .export_formats import FORMATS
from .export_writer import EXPORT_DIR
from .funnel import Funnel, read_funnel
from .kept_stats import KeptStats, kept_stats
from .licenses import ModelLicense, dataset_license, generating_models
from .storage import MANIFEST, RunStore

CARD_NAME = "README.md"
CONFIG_NAME = "config.yaml"
SPLIT = "train"
LANGUAGE_MIN_SHARE = 0.01
TAGS = ("synthetic", "magpie", "magpie-ray")
# The Hub's size_categories, by the largest row count each covers.
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, read from the run's files and config."""

    run_name: str
    funnel: Funnel
    kept: KeptStats
    models: list[ModelLicense]
    configs: dict[str, str]  # config name -> export file it maps
    files: dict[str, int]  # export file -> records
    command: str
    costs: list[tuple[str, str]] = field(default_factory=list)  # costs.cost_rows
    diversity: list[tuple[str, str, str]] = field(default_factory=list)  # (figure, all, kept)
    topics: list[dict] = field(default_factory=list)  # the dedup step's topic clusters


def size_category(rows: int) -> str:
    for most, label in SIZE_CATEGORIES:
        if rows < most:
            return label
    return "n>1B"


def card_configs(formats: list[str]) -> dict[str, str]:
    """config name -> file: the JSONL exports when there are any, else data.parquet (one file
    builder serves every config of a folder)."""
    jsonl = {n: FORMATS[n].file for n in formats if FORMATS[n].record is not None}
    return jsonl or {n: FORMATS[n].file for n in formats}


def languages(kept: KeptStats) -> list[str]:
    """The kept rows' instruction languages at LANGUAGE_MIN_SHARE or more, ISO 639-1."""
    return [
        label.lower()
        for label, _, share in kept.shares("language")
        if label != "null" and share >= LANGUAGE_MIN_SHARE
    ]


def reproduce_command(overrides: list[str] | None) -> str:
    return shlex.join(["python", "-m", "magpie_ray", *(overrides or [])])


def hub_repo_problems(hub_repo: str) -> list[str]:
    """Why `export.hub_repo` is no Hub dataset id (org/name), as huggingface_hub checks ids."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problem = None
    try:
        validate_repo_id(hub_repo)
    except HFValidationError as err:
        problem = " ".join(str(err).split())
    if problem is None and hub_repo.count("/") != 1:
        problem = "it needs the owner: org/name (or user/name)"
    if problem is None:
        return []
    return [f"export.hub_repo={hub_repo!r} is not a Hub dataset id: {problem}"]


def upload_command(hub_repo: str, exports_dir: str) -> str:
    """The command that uploads the exports folder as a Hub dataset (the run sends nothing)."""
    arguments = [hub_repo, exports_dir, ".", "--repo-type=dataset", f"--exclude={MANIFEST}"]
    return "hf upload " + shlex.join(arguments)


def gather(cfg, store: RunStore, overrides: list[str] | None = None) -> CardFacts:
    """The card's facts: the funnel, the kept rows' statistics, the models' licenses."""
    exports = posixpath.join(store.root, EXPORT_DIR)
    funnel = read_funnel(store, cfg.generate.num_samples)
    costs = read_costs(store)
    files = {
        file: n
        for file, n in funnel.exports.items()
        if store.size(posixpath.join(exports, file)) is not None
    }
    # `datasets` cannot load a split without rows: an empty file is listed, not a config
    configs = card_configs([str(f) for f in cfg.export.formats])
    return CardFacts(
        run_name=cfg.run_name,
        funnel=funnel,
        kept=kept_stats(store, store.kept_dir("select")),
        models=generating_models(cfg),
        configs={name: file for name, file in configs.items() if files.get(file)},
        files=files,
        command=reproduce_command(overrides),
        costs=cost_rows(costs, cfg.cluster.gpu_hour_usd, funnel.kept) if costs.steps else [],
        diversity=diversity_rows(figures) if (figures := read_diversity(store)) else [],
        topics=(store.read_manifest(store.kept_dir("dedup")) or {}).get("stats", {}).get("topics")
        or [],
    )


def _features(cfg, store: RunStore, name: str):
    from datasets import Features

    fmt = FORMATS[name]
    if fmt.schema is not None:
        return Features.from_arrow_schema(fmt.schema(cfg.export))
    path = posixpath.join(store.root, EXPORT_DIR, fmt.file)
    return Features.from_arrow_schema(pq.read_schema(path, filesystem=store.fs))


def front_matter(cfg, store: RunStore, facts: CardFacts):
    """The card's metadata as huggingface_hub's DatasetCardData."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    kept = facts.funnel.kept if facts.funnel.kept is not None else facts.kept.rows
    data = DatasetCardData(
        **dataset_license(facts.models),
        language=languages(facts.kept) or None,
        task_categories=["text-generation"],
        size_categories=[size_category(kept)],
        tags=list(TAGS),
        pretty_name=facts.run_name,
    )
    default = "messages" if "messages" in facts.configs else next(iter(facts.configs), None)
    MetadataConfigs(
        {
            name: {
                "data_files": [{"split": SPLIT, "path": file}],
                **({"default": True} if name == default else {}),
            }
            for name, file in facts.configs.items()
        }
    ).to_dataset_card_data(data)
    infos = {}
    for name, file in facts.configs.items():
        size = store.size(posixpath.join(store.root, EXPORT_DIR, file))
        splits = SplitDict()
        splits.add(SplitInfo(SPLIT, num_bytes=size, num_examples=facts.files.get(file, 0)))
        infos[name] = DatasetInfo(
            features=_features(cfg, store, name),
            splits=splits,
            download_size=size,
            dataset_size=size,
        )
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def write_card(
    cfg, store: RunStore, config_yaml: str, overrides: list[str] | None = None
) -> tuple[str, float]:
    """Write exports/README.md and exports/config.yaml; (the card's path, seconds taken)."""
    from huggingface_hub import DatasetCard

    from .card_body import render_body

    started = time.perf_counter()
    facts = gather(cfg, store, overrides)
    data = front_matter(cfg, store, facts)
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n{render_body(cfg, facts)}")
    store.write_text(posixpath.join(EXPORT_DIR, CONFIG_NAME), config_yaml)
    path = store.write_text(posixpath.join(EXPORT_DIR, CARD_NAME), str(card))
    return path, round(time.perf_counter() - started, 3)
