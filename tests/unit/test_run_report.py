"""The HTML run report, from hand-made part files (no Ray, no models)."""

from __future__ import annotations

import re

import pyarrow as pa

from magpie_ray.run_report import collect, write_report
from magpie_ray.storage import DROPPED_SCHEMA, RunStore


def _store(tmp_path) -> RunStore:
    store = RunStore(str(tmp_path / "run"))
    n = 12
    generated = pa.table(
        {
            "uuid": [f"u{i}" for i in range(n)],
            "instruction_tokens": [10] * n,
            "response_tokens": [100] * n,
        }
    )
    store.write_part(store.kept_dir("generate"), "part-000000000-a.parquet", generated)
    dropped = pa.Table.from_pylist(
        [
            {
                "uuid": "x1",
                "index": 20,
                "step": "generate",
                "reason": "instruction_empty",
                "detail": "",
            },
            {
                "uuid": "x2",
                "index": 21,
                "step": "generate",
                "reason": "instruction_empty",
                "detail": "",
            },
        ],
        schema=DROPPED_SCHEMA,
    )
    store.write_part(store.dropped_dir("generate"), "part-000000020-b.parquet", dropped)
    tagged = generated.append_column(
        "task_category", pa.array(["Math"] * 8 + ["Coding & Debugging"] * 3 + [None])
    )
    tagged = tagged.append_column("instruct_reward", pa.array([float(i) for i in range(n)]))
    tagged = tagged.append_column(
        "embedding",
        pa.array([[float(i % 3), 1.0, float(i)] for i in range(n)], pa.list_(pa.float32())),
    )
    rewards = [[1.0, 2.0]] * 3 + [[1.0, 1.0]] + [None] * (n - 4)
    tagged = tagged.append_column("rewards", pa.array(rewards, pa.list_(pa.float64())))
    reasons = [None, None, None, "tie"] + [None] * (n - 4)
    tagged = tagged.append_column("preference_pair_reason", pa.array(reasons, pa.string()))
    errors = [[] for _ in range(n - 1)] + [[{"tag": "task_category", "reason": "no JSON"}]]
    tagged = tagged.append_column("tag_errors", pa.array(errors))
    store.write_part(store.kept_dir("tag"), "part-000000000-a.parquet", tagged)
    return store


def test_collect_counts_rows_drops_tokens_and_labels(tmp_path):
    data = collect(_store(tmp_path))
    assert data.kept == {"generated": 12, "tagged": 12}
    assert data.dropped == {"generate": {"instruction_empty": 2}}
    assert data.tokens == {"instruction_tokens": 120, "response_tokens": 1200}
    assert data.labels["task_category"] == {"Math": 8, "Coding & Debugging": 3, "null": 1}
    assert data.null_tags == {"task_category: no JSON": 1}
    assert data.rewards == [float(i) for i in range(12)]
    assert len(data.embeddings) == 12 and data.embedding_labels.count("Math") == 8
    # rows without preference samples are not preference rows at all
    assert data.preference_pairs == {"pair": 3, "tie": 1}


def test_report_is_one_html_file_with_inline_plots(tmp_path):
    store = _store(tmp_path)
    path = write_report(store, "test run", ["generate: 12 rows"])
    text = (tmp_path / "run" / "report.html").read_text()
    assert path.endswith("report.html")
    assert "<td>instruction_empty</td><td>2</td>" in text
    assert "generate: 12 rows" in text
    # the funnel chart, task category bars, reward histogram, embedding map
    assert len(re.findall(r"data:image/png;base64,", text)) == 4
