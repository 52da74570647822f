"""report.html's page: what `run_report.collect` read, laid out for people to read.

At the top, the row funnel as a chart (requested to kept and each export), with the cost and
diversity figures beside it; then the topic clusters; then the plots in a grid (label
distributions, rewards, neighbour distances, the embedding map coloured by topic); then a sample
of conversations with their tags (kept ones, and dropped ones with their reason); then the
counts tables. One file that opens offline: the plots are PNGs inlined as base64, the style
sheet and a few lines of script are inline. The script checks, once the page has loaded, that
every plot decoded, shows a warning on the page where one did not, and records what rendered in
`<html data-rendered='{"images": .., "broken": .., "columns": ..}'>` (the browser test reads it).
"""

from __future__ import annotations

import base64
import html
import io

from .labels import LABEL_ORDERS

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
main{max-width:1400px;margin:0 auto;padding:1.5em}
h1{margin:.2em 0}h2{margin:1.2em 0 .5em}
.top{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,1fr);gap:1em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1em}
.card{background:#fff;border:1px solid #dde;border-radius:6px;padding:.8em;overflow:auto}
.card img{max-width:100%;height:auto}
table{border-collapse:collapse;margin:.3em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
.conv .fate{font-weight:bold}.conv .kept{color:#2a7a2a}.conv .dropped{color:#a33}
.conv pre{white-space:pre-wrap;background:#f3f3f6;padding:.5em;margin:.3em 0;max-height:14em}
.tags{font-size:.85em;color:#555}
#render-warning{display:none;background:#fee;border:1px solid #c33;padding:.5em}
"""
SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  var grid = document.querySelector('.grid');
  var columns = grid ? getComputedStyle(grid).gridTemplateColumns.split(' ').length : 0;
  if (broken.length) {
    var warning = document.getElementById('render-warning');
    warning.textContent = broken.length + ' plot(s) failed to render';
    warning.style.display = 'block';
  }
  document.documentElement.dataset.rendered = JSON.stringify(
    {images: images.length - broken.length, broken: broken.length, columns: columns});
});
"""
CLIP = 1200  # characters of a sample conversation's texts


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
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


def _funnel_chart(stages: list[tuple[str, int]]) -> str:
    """The funnel, top to bottom: one bar per stage, its rows written at its end."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.38 * len(stages) + 1))
    names = [name for name, _ in stages][::-1]
    values = [rows or 0 for _, rows in stages][::-1]
    colours = [
        "#c44e52" if name.startswith(("dropped", "removed", "near-duplicates")) else "#4c72b0"
        for name in names
    ]
    ax.barh(names, values, color=colours)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,}", va="center", fontsize=8)
    ax.set_xlabel("rows")
    ax.set_title("row funnel")
    ax.margins(x=0.15)
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


def _rows(header: tuple[str, ...], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _counts(header: tuple[str, str], counts: dict) -> str:
    return _rows(header, sorted(counts.items(), key=lambda kv: -kv[1]))


def _card(title: str, body: str) -> str:
    return f'<div class="card"><h3>{html.escape(title)}</h3>{body}</div>'


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= CLIP else text[:CLIP] + " [...]"


def _conversation(row: dict) -> str:
    fate = row["fate"]
    why = f": {row['reason']}" if row.get("reason") else ""
    detail = f" ({row['detail']})" if row.get("detail") else ""
    tags = ", ".join(
        f"{k}: {row[k]}"
        for k in ("task_category", "difficulty", "input_quality", "safety", "instruct_reward")
        if row.get(k) is not None
    )
    css = "kept" if fate == "kept" else "dropped"
    parts = [
        f'<div class="fate {css}">{html.escape(fate + why + detail)}</div>',
        f'<div class="tags">{html.escape(row.get("uuid") or "")} {html.escape(tags)}</div>',
    ]
    if row.get("instruction") is not None:
        parts.append(f"<b>user</b><pre>{html.escape(_clip(row['instruction']))}</pre>")
        parts.append(f"<b>assistant</b><pre>{html.escape(_clip(row.get('response')))}</pre>")
    return f'<div class="card conv">{"".join(parts)}</div>'


def _plots(data, seed: int) -> list[str]:
    plots = [
        _card(column, _bar(column, counts, LABEL_ORDERS.get(column, ())))
        for column, counts in data.labels.items()
    ]
    if data.rewards:
        plots.append(_card("Reward", _histogram("instruct_reward", data.rewards, "reward")))
    if data.min_neighbor_distances:
        histogram = _histogram(
            "min_neighbor_distance",
            data.min_neighbor_distances,
            "squared L2 to the nearest other instruction",
            threshold=data.dedup_threshold,
        )
        plots.append(_card("Nearest neighbours", histogram))
    if len(data.embeddings) >= 5:
        by = "topic" if data.topics else "task category"
        plots.append(
            _card(
                f"Embedding map, by {by}",
                _embedding_map(data.embeddings, data.embedding_labels, seed),
            )
        )
    return plots


def render(data, title: str, invocation: list[str], seed: int = 0) -> str:
    """The page of a `run_report.ReportData`."""
    parts = [f"<h1>{html.escape(title)}</h1>", '<div id="render-warning"></div>']
    if invocation:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in invocation)
        parts.append(f"<ul>{items}</ul>")
    side = []
    if data.costs:
        side.append(_card("Cost and efficiency", _rows(("figure", "value"), data.costs)))
    if data.diversity:
        side.append(_card("Diversity", _rows(("", "generated", "kept"), data.diversity)))
    if data.funnel is not None:
        stages = data.funnel.stages()
        funnel = _card("Row funnel", _funnel_chart(stages) + _rows(("stage", "rows"), stages))
        parts.append(f'<div class="top">{funnel}<div>{"".join(side)}</div></div>')
    else:
        parts.append(f'<div class="grid">{"".join(side)}</div>')
    if data.topics:
        shown = data.topics[:15]
        rows = [
            (t["topic"], t["rows"], t.get("top_task_category") or "", t.get("central_instruction"))
            for t in shown
        ]
        header = ("topic", "rows", "top task category", "most central instruction")
        parts.append(
            f"<h2>Topic clusters ({len(data.topics)}; the largest {len(shown)})</h2>"
            + f'<div class="card">{_rows(header, rows)}</div>'
        )
    plots = _plots(data, seed)
    if plots:
        parts.append(f'<h2>Distributions</h2><div class="grid">{"".join(plots)}</div>')
    if data.conversations:
        cards = "".join(_conversation(row) for row in data.conversations)
        parts.append(f'<h2>Conversations</h2><div class="grid">{cards}</div>')
    tables = [_card("Rows per step", _counts(("output", "rows"), data.kept))]
    tables += [
        _card(f"Dropped by {step}", _counts(("reason", "rows"), reasons))
        for step, reasons in data.dropped.items()
    ]
    if data.tokens:
        tables.append(_card("Tokens", _counts(("generated", "tokens"), data.tokens)))
    if data.null_tags:
        tables.append(
            _card("Null tags by reason", _counts(("tag: reason", "rows"), data.null_tags))
        )
    if data.preference_pairs:
        pairs = _counts(("pair or why none", "rows"), data.preference_pairs)
        tables.append(_card("Preference rows", pairs))
    parts.append(f'<h2>Counts</h2><div class="grid">{"".join(tables)}</div>')
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head>"
        f"<body><main>{''.join(parts)}</main></body></html>"
    )
