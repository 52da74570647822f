"""The run report: one self-contained HTML file (`report.html`) beside a run's outputs.

Reads whatever the run holds: every step's kept parts (`generated/`, `tagged/`, `deduped/`, ...)
and `dropped/<step>/` parts. Shows rows per step and per drop reason, null tags per reason,
tokens (and this invocation's throughput when given), label distributions (task category,
input quality, difficulty, safety, language), histograms of rewards and of min-neighbour
distances, and a 2-D t-SNE map of the instruction embeddings coloured by task category.
Plots are PNGs inlined as base64, so the file can be mailed or opened from object storage.
"""

from __future__ import annotations

import base64
import bisect
import html
import io
import posixpath
import random
from collections import Counter
from dataclasses import dataclass, field

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


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="" src="data:image/png;base64,{encoded}">'


def _bar(title: str, counts: dict[str, int], order: tuple[str, ...] = ()) -> str:
    import matplotlib.pyplot as plt

    # the whole scale, zero counts included, so an empty label shows as such
    labels = list(order) + sorted(k for k in counts if k not in order)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(labels) + 1))
    ax.barh(labels[::-1], [counts.get(k, 0) for k in labels][::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel("rows")
    return _png(fig)


def _histogram(title: str, values: list[float], xlabel: str, threshold: float | None = None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(values, bins=min(50, max(5, len(values) // 4)), color="#55a868")
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g}")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    return _png(fig)


def _embedding_map(vectors: list[list[float]], labels: list[str], seed: int) -> str:
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.manifold import TSNE

    points = TSNE(
        n_components=2,
        perplexity=min(30.0, max(2.0, (len(vectors) - 1) / 3)),
        init="pca",
        random_state=seed,
    ).fit_transform(np.asarray(vectors, dtype="float32"))
    fig, ax = plt.subplots(figsize=(7, 6))
    for label in sorted(set(labels)):
        mask = np.array([lab == label for lab in labels])
        ax.scatter(points[mask, 0], points[mask, 1], s=8, label=label)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(f"instruction embeddings, t-SNE ({len(vectors)} rows)")
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def _table(header: tuple[str, str], counts: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v}</td></tr>"
        for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{rows}</table>"


def render(data: ReportData, title: str, invocation: list[str], seed: int = 0) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if invocation:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in invocation)
        parts.append(f"<h2>This invocation</h2><ul>{items}</ul>")
    if data.funnel is not None:
        rows = "".join(
            f"<tr><td>{html.escape(stage)}</td><td>{n}</td></tr>"
            for stage, n in data.funnel.stages()
        )
        header = "<tr><th>stage</th><th>rows</th></tr>"
        parts.append(f"<h2>Row funnel</h2><table>{header}{rows}</table>")
    if data.costs:
        rows = "".join(
            f"<tr><td>{html.escape(figure)}</td><td>{html.escape(value)}</td></tr>"
            for figure, value in data.costs
        )
        parts.append(f"<h2>Cost and efficiency</h2><table>{rows}</table>")
    if data.diversity:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
            for row in data.diversity
        )
        header = "<tr><th>diversity</th><th>generated</th><th>kept</th></tr>"
        parts.append(f"<h2>Diversity</h2><table>{header}{rows}</table>")
    if data.topics:
        rows = "".join(
            f"<tr><td>{t['topic']}</td><td>{t['rows']}</td>"
            f"<td>{html.escape(str(t.get('top_task_category') or ''))}</td>"
            f"<td>{html.escape(t.get('central_instruction') or '')}</td></tr>"
            for t in data.topics[:TOPICS_SHOWN]
        )
        header = "".join(
            f"<th>{h}</th>" for h in ("topic", "rows", "top task category", "central instruction")
        )
        shown = min(len(data.topics), TOPICS_SHOWN)
        title = f"Topic clusters ({len(data.topics)}; the largest {shown})"
        parts.append(f"<h2>{title}</h2><table><tr>{header}</tr>{rows}</table>")
    parts.append("<h2>Rows per step</h2>" + _table(("output", "rows"), data.kept))
    for step, reasons in data.dropped.items():
        parts.append(
            f"<h3>Dropped by {html.escape(step)}</h3>" + _table(("reason", "rows"), reasons)
        )
    if data.tokens:
        parts.append("<h2>Tokens</h2>" + _table(("generated", "tokens"), data.tokens))
    if data.null_tags:
        parts.append(
            "<h2>Null tags by reason</h2>" + _table(("tag: reason", "rows"), data.null_tags)
        )
    if data.preference_pairs:
        parts.append(
            "<h2>Preference rows</h2>" + _table(("pair or why none", "rows"), data.preference_pairs)
        )
    plots = [
        _bar(column, counts, LABEL_ORDERS.get(column, ())) for column, counts in data.labels.items()
    ]
    if data.rewards:
        plots.append(_histogram("instruct_reward", data.rewards, "reward"))
    if data.min_neighbor_distances:
        plots.append(
            _histogram(
                "min_neighbor_distance",
                data.min_neighbor_distances,
                "squared L2 to the nearest other instruction",
                threshold=data.dedup_threshold,
            )
        )
    if len(data.embeddings) >= 5:
        plots.append(_embedding_map(data.embeddings, data.embedding_labels, seed))
    if plots:
        parts.append("<h2>Distributions</h2>" + "".join(f"<div>{p}</div>" for p in plots))
    style = (
        "body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


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
    data = collect(store, seed, requested, gpu_hour_usd)
    html_text = render(data, title, invocation, seed)
    return store.write_text(REPORT_NAME, html_text)
