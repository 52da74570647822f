"""The run report: one self-contained HTML file (`report.html`) beside a run's outputs.

Reads whatever the run holds (`collect`): every step's kept parts (`generated/`, `tagged/`,
`deduped/`, ...) and `dropped/<step>/` parts, the row funnel, cost and diversity figures (the
same readers as the run summary and the dataset card), rows per step and per drop reason, null
tags per reason, tokens, label distributions (task category, input quality, difficulty, safety,
language), rewards and min-neighbour distances, a sample of the instruction embeddings for the
map, and a few conversations: kept ones with their tags, dropped ones with their reason
(`conversations`). `report_page.py` lays it out.
"""

from __future__ import annotations

import bisect
import posixpath
import random
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .costs import cost_rows, read_costs
from .diversity import diversity_rows, read_diversity
from .funnel import Funnel, read_funnel
from .labels import LABEL_ORDERS
from .report import label_counts, null_tag_reasons, preference_pair_counts
from .storage import RunStore

REPORT_NAME = "report.html"
MAP_SAMPLE = 2000  # t-SNE is quadratic-ish: a seeded sample keeps the map to seconds
TOPICS_SHOWN = 15  # topic clusters listed, and coloured on the map (the rest: "other")


@dataclass
class ReportData:
    kept: dict[str, int] = field(default_factory=dict)  # kept dir -> rows
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # step -> reason -> rows
    null_tags: dict[str, int] = field(default_factory=dict)  # "tag: reason" -> rows
    preference_pairs: dict[str, int] = field(default_factory=dict)  # "pair" or why none
    tokens: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)
    min_neighbor_distances: list[float] = field(default_factory=list)
    embeddings: list[list[float]] = field(default_factory=list)
    embedding_labels: list[str] = field(default_factory=list)
    dedup_threshold: float | None = None  # the dedup step's, from its manifest
    conversations: list[dict] = field(default_factory=list)  # `conversations`
    funnel: Funnel | None = None  # as the run summary and the dataset card give it
    costs: list[tuple[str, str]] = field(default_factory=list)  # costs.cost_rows
    diversity: list[tuple[str, str, str]] = field(default_factory=list)  # (figure, all, kept)
    topics: list[dict] = field(default_factory=list)  # the dedup step's topic clusters


def _dirs(store: RunStore, parent: str) -> list[str]:
    info = store.fs.get_file_info(parent)
    if info.type == pafs.FileType.NotFound:
        return []
    entries = store.fs.get_file_info(pafs.FileSelector(parent, recursive=False))
    return sorted(e.path for e in entries if e.type == pafs.FileType.Directory)


def _read(store: RunStore, directory: str, wanted: list[str]):
    files = store.part_files(directory)
    if not files:
        return None
    names = set(pq.read_schema(files[0], filesystem=store.fs).names)
    return store.read_parts(directory, columns=[c for c in wanted if c in names])


def collect(
    store: RunStore, seed: int = 0, requested: int | None = None, gpu_hour_usd=None
) -> ReportData:
    """Everything the report shows, read back from the run's part files."""
    data = ReportData(funnel=read_funnel(store, requested))
    costs = read_costs(store)
    if costs.steps:
        data.costs = cost_rows(costs, gpu_hour_usd, data.funnel.kept)
    figures = read_diversity(store)
    data.diversity = diversity_rows(figures) if figures else []
    dedup = store.read_manifest(store.kept_dir("dedup")) or {}
    data.topics = (dedup.get("stats") or {}).get("topics") or []
    for directory in _dirs(store, store.root):
        name = posixpath.basename(directory)
        if name == "dropped" or not store.part_files(directory):
            continue
        table = _read(store, directory, ["uuid"])
        data.kept[name] = table.num_rows
    for directory in _dirs(store, store.dropped_dir("")):
        table = _read(store, directory, ["reason"])
        if table is not None:
            reasons = Counter(table.column("reason").to_pylist())
            data.dropped[posixpath.basename(directory)] = dict(reasons)

    generated = _read(store, store.kept_dir("generate"), ["instruction_tokens", "response_tokens"])
    if generated is not None:
        for column in ("instruction_tokens", "response_tokens"):
            if column in generated.column_names:
                data.tokens[column] = sum(v or 0 for v in generated.column(column).to_pylist())

    # The most processed tagged rows: deduped/ carries the tags plus the dedup columns.
    tag_dir = store.kept_dir("dedup") if data.kept.get("deduped") else store.kept_dir("tag")
    wanted = [*LABEL_ORDERS, "language", "instruct_reward", "tag_errors"]
    wanted += ["rewards", "preference_pair_reason"]
    tags = _read(store, tag_dir, [*wanted, "min_neighbor_distance"])
    if tags is None:
        return data
    for column in (*LABEL_ORDERS, "language"):
        if column in tags.column_names:
            data.labels[column] = label_counts(tags, column)
    if "tag_errors" in tags.column_names:
        data.null_tags = null_tag_reasons(tags)
    if "preference_pair_reason" in tags.column_names:
        data.preference_pairs = preference_pair_counts(tags)
    if "instruct_reward" in tags.column_names:
        data.rewards = [v for v in tags.column("instruct_reward").to_pylist() if v is not None]
    if "min_neighbor_distance" in tags.column_names:
        distances = tags.column("min_neighbor_distance").to_pylist()
        data.min_neighbor_distances = [v for v in distances if v is not None]
        manifest = store.read_manifest(store.kept_dir("dedup")) or {}
        data.dedup_threshold = manifest.get("made_from", {}).get("config", {}).get("threshold")
    # The map is coloured by topic cluster (the largest TOPICS_SHOWN; the rest "other") where
    # dedup made them, else by task category.
    by_topic = bool(data.topics)
    label = "topic" if by_topic else "task_category"
    data.embeddings, labels = embedding_sample(store, tag_dir, seed, label)
    if by_topic:
        shown = {t["topic"]: t for t in data.topics[:TOPICS_SHOWN]}
        labels = [
            f"topic {v}: {shown[v].get('top_task_category') or '-'}" if v in shown else "other"
            for v in labels
        ]
    data.embedding_labels = [v if v is not None else "null" for v in labels]
    return data


def embedding_sample(
    store: RunStore, directory: str, seed: int, label: str = "task_category"
) -> tuple[list, list]:
    """(vectors, `label` values) of MAP_SAMPLE rows with an embedding, seeded: the rows
    `random.Random(seed).sample` picks from all of them in part order, read one part at a time
    (a run's embeddings do not fit in the driver)."""
    files = store.part_files(directory)
    schemas = [pq.read_schema(f, filesystem=store.fs).names for f in files]
    if not files or "embedding" not in schemas[0]:
        return [], []
    present = []  # per part: the rows that have an embedding
    for f in files:
        column = pq.read_table(f, columns=["embedding"], filesystem=store.fs).column(0)
        present.append(pc.indices_nonzero(column.is_valid()).to_numpy())
    total = sum(len(rows) for rows in present)
    if total > MAP_SAMPLE:
        picked = random.Random(seed).sample(range(total), MAP_SAMPLE)
    else:
        picked = list(range(total))
    wanted = sorted(picked)
    found: dict[int, tuple] = {}
    offset = 0
    for f, names, rows in zip(files, schemas, present, strict=True):
        lo = bisect.bisect_left(wanted, offset)
        hi = bisect.bisect_left(wanted, offset + len(rows))
        if hi > lo:
            columns = ["embedding"] + ([label] if label in names else [])
            take = rows[[i - offset for i in wanted[lo:hi]]]
            table = pq.read_table(f, columns=columns, filesystem=store.fs).take(take)
            categories = table.column(label).to_pylist() if label in names else [None] * len(take)
            for i, vector, category in zip(
                wanted[lo:hi], table.column("embedding").to_pylist(), categories, strict=True
            ):
                found[i] = (vector, category)
        offset += len(rows)
    return [found[i][0] for i in picked], [found[i][1] for i in picked]


SHOWN_CONVERSATIONS = 4  # kept ones, and as many dropped by the filter
TEXT_FIELDS = ["uuid", "instruction", "response"]
TAG_FIELDS = ["task_category", "difficulty", "input_quality", "safety", "instruct_reward"]


def conversations(store: RunStore, shown: int = SHOWN_CONVERSATIONS) -> list[dict]:
    """The first `shown` kept rows (texts and tags), then the first `shown` rows the filter
    dropped (texts from `deduped/`, with the reason), then rows dropped at generation (their
    reason only: a dropped row keeps no text). Read part by part, stopping when found."""
    out: list[dict] = []
    for path in store.part_files(store.kept_dir("select"))[:shown]:
        names = set(pq.read_schema(path, filesystem=store.fs).names)
        wanted = [c for c in TEXT_FIELDS + TAG_FIELDS if c in names]
        rows = pq.read_table(path, columns=wanted, filesystem=store.fs).slice(0, shown - len(out))
        out += [{"fate": "kept", **r} for r in rows.to_pylist()]
        if len(out) >= shown:
            break
    dropped: dict[str, dict] = {}
    for path in store.part_files(store.dropped_dir("select")):
        table = pq.read_table(path, columns=["uuid", "reason", "detail"], filesystem=store.fs)
        for row in table.slice(0, shown - len(dropped)).to_pylist():
            dropped[row["uuid"]] = {"fate": "dropped by the filter", **row}
        if len(dropped) >= shown:
            break
    for path in store.part_files(store.kept_dir("dedup")):
        if not any(d.get("instruction") is None for d in dropped.values()):
            break
        names = set(pq.read_schema(path, filesystem=store.fs).names)
        wanted = [c for c in TEXT_FIELDS + TAG_FIELDS if c in names]
        table = pq.read_table(path, columns=wanted, filesystem=store.fs)
        mask = pc.is_in(table.column("uuid"), value_set=pa.array(list(dropped), pa.string()))
        for row in table.filter(mask).to_pylist():
            dropped[row["uuid"]].update(row)
    out += list(dropped.values())
    for path in store.part_files(store.dropped_dir("generate"))[:1]:
        table = pq.read_table(path, columns=["uuid", "reason", "detail"], filesystem=store.fs)
        out += [{"fate": "dropped at generation", **r} for r in table.slice(0, 2).to_pylist()]
    return out


def write_report(
    store: RunStore,
    title: str,
    invocation: list[str],
    seed: int = 0,
    requested: int | None = None,
    gpu_hour_usd: float | None = None,
) -> str:
    """Collects, renders and atomically writes `report.html`; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    from .report_page import render

    data = collect(store, seed, requested, gpu_hour_usd)
    data.conversations = conversations(store)
    html_text = render(data, title, invocation, seed)
    return store.write_text(REPORT_NAME, html_text)
