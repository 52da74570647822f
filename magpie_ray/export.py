"""Exports: the selected rows as files that SFT / preference trainers load directly.

Reads every `selected/` part. Writes, each atomically, under `<run>/exports/`:

    sharegpt.jsonl  {"uuid", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}
                    Axolotl `type: sharegpt` / chat_template, LLaMA-Factory `formatting: sharegpt`
    messages.jsonl  {"uuid", "messages": [{"role": "user"|"assistant"|"system", "content"}]}
                    TRL SFTTrainer (conversational), OpenAI fine-tuning, Axolotl chat_template
    dpo.jsonl       {"uuid", "prompt": [messages], "chosen": [assistant], "rejected": [assistant]}
                    TRL DPOTrainer's conversational format with an explicit prompt; only rows
                    whose `chosen` and `rejected` are both set (a valid pair)
    data.parquet    every column of the selected rows (the released Magpie field names),
                    without `embedding` unless export.include_embedding

Rows are ordered by `index` then `uuid`, so the files do not depend on part order. JSON keeps
non-ASCII text as is. Nothing is dropped except rows without a preference pair from dpo.jsonl
(counted as `rows_without_pair`). Resume: `exports/_manifest.json` names the selected parts and
export config the files were made from; a rerun with both unchanged does nothing.
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from .config import ConfigError, ExportConfig
from .storage import RunStore

EXPORT_DIR = "exports"
INPUT_STEP = "select"
FILES = {
    "sharegpt": "sharegpt.jsonl",
    "messages": "messages.jsonl",
    "dpo": "dpo.jsonl",
    "parquet": "data.parquet",
}
JSONL_COLUMNS = ("uuid", "instruction", "response", "conversations", "chosen", "rejected")
ROLE_OF = {"human": "user", "gpt": "assistant", "system": "system"}


@dataclass(frozen=True)
class ExportStats:
    rows: int
    files: dict[str, int] = field(default_factory=dict)  # file name -> records written
    rows_without_pair: int = 0  # selected rows left out of dpo.jsonl
    seconds: float = 0.0
    skipped: bool = False


def _turns(row: dict) -> list[dict]:
    """The row's conversation as from/value turns (`conversations`, else instruction/response)."""
    if row.get("conversations"):
        return [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]
    return [
        {"from": "human", "value": row["instruction"]},
        {"from": "gpt", "value": row["response"]},
    ]


def sharegpt_record(row: dict) -> dict:
    return {"uuid": row["uuid"], "conversations": _turns(row)}


def messages_record(row: dict) -> dict:
    messages = [{"role": ROLE_OF[t["from"]], "content": t["value"]} for t in _turns(row)]
    return {"uuid": row["uuid"], "messages": messages}


def dpo_record(row: dict) -> dict | None:
    """Prompt = the conversation before the final assistant turn; None without a valid pair."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not chosen or not rejected:
        return None
    chosen = [{"role": m["role"], "content": m["content"]} for m in chosen]
    rejected = [{"role": m["role"], "content": m["content"]} for m in rejected]
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    prompt = chosen[:-1] or [{"role": "user", "content": row["instruction"]}]
    return {
        "uuid": row["uuid"],
        "prompt": prompt,
        "chosen": chosen[-1:],
        "rejected": rejected[-1:],
    }


def ordered(table: pa.Table) -> pa.Table:
    keys = [(k, "ascending") for k in ("index", "uuid") if k in table.column_names]
    return table.sort_by(keys) if keys else table


def _write_jsonl(store: RunStore, path: str, records: list[dict]) -> None:
    def write(tmp: str) -> None:
        with store.fs.open_output_stream(tmp) as f:
            for record in records:
                f.write((json.dumps(record, ensure_ascii=False) + "\n").encode())

    store.write_atomic(path, write)


def write_exports(store: RunStore, table: pa.Table, cfg: ExportConfig) -> ExportStats:
    """Write the configured files for `table` (the selected rows) under exports/."""
    started = time.perf_counter()
    table = ordered(table)
    out = posixpath.join(store.root, EXPORT_DIR)
    files: dict[str, int] = {}
    jsonl_columns = [c for c in JSONL_COLUMNS if c in table.column_names]
    rows = table.select(jsonl_columns).to_pylist() if set(cfg.formats) - {"parquet"} else []
    without_pair = 0
    for fmt in cfg.formats:
        path = posixpath.join(out, FILES[fmt])
        if fmt == "parquet":
            full = table
            if not cfg.include_embedding and "embedding" in table.column_names:
                full = table.drop_columns(["embedding"])
            store.write_atomic(
                path, lambda tmp, t=full: pq.write_table(t, tmp, filesystem=store.fs)
            )
            files[FILES[fmt]] = full.num_rows
            continue
        if fmt == "sharegpt":
            records = [sharegpt_record(r) for r in rows]
        elif fmt == "messages":
            records = [messages_record(r) for r in rows]
        else:
            pairs = [dpo_record(r) for r in rows]
            records = [p for p in pairs if p is not None]
            without_pair = len(pairs) - len(records)
        _write_jsonl(store, path, records)
        files[FILES[fmt]] = len(records)
    return ExportStats(
        rows=table.num_rows,
        files=files,
        rows_without_pair=without_pair,
        seconds=round(time.perf_counter() - started, 3),
    )


def run_step(cfg, store: RunStore) -> ExportStats:
    """Export the selected rows, unless exports/ was already made from them with this config."""
    source, target = store.kept_dir(INPUT_STEP), posixpath.join(store.root, EXPORT_DIR)
    if store.read_manifest(source) is None:
        raise ConfigError(f"no finished selection in {source}: run the select step first")
    fingerprint = {"inputs": store.fingerprint(source), "config": asdict(cfg.export)}
    finished = store.finished_stats(target, fingerprint)
    if finished is not None:
        return ExportStats(**finished, skipped=True)
    store.clear_manifest(target)
    table = store.read_parts(source)
    if table is None:  # the filter kept nothing: empty files, with the full schema in Parquet
        table = store.read_parts(store.kept_dir("dedup")).slice(0, 0)
    stats = write_exports(store, table, cfg.export)
    stats_fields = {k: v for k, v in asdict(stats).items() if k != "skipped"}
    store.write_manifest(target, {"made_from": fingerprint, "stats": stats_fields})
    return stats
