"""Output layout, atomic part files and resume bookkeeping.

A run lives at `<output_dir>/<run_name>/` (a local path or a URI pyarrow can open):

    config.yaml              the resolved config of the latest invocation
    generated/part-*.parquet rows kept by the generate step
    dropped/<step>/part-*    rows a step dropped: uuid, index, step, reason, detail
    tagged/ deduped/ selected/  the tag, dedup and select steps' rows (`kept_dir`)
    exports/                 SFT / preference files made from selected/
    report.html              the run report

Every part file is written under a hidden temporary name and then renamed, so readers never see a
partial file. A row-wise step's "done" set is the uuids in its kept and dropped parts: a rerun
skips them. A global step (dedup, select, export) writes `_manifest.json` into its output
folder last, naming the input parts and config it was made from; a rerun with the same inputs
and config does nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

DROPPED_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("index", pa.int64()),
        ("step", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


S = TypeVar("S")

# Where each step's kept rows live (the released-dataset-like names a user browses).
KEPT_DIRS = {"generate": "generated", "tag": "tagged", "dedup": "deduped", "select": "selected"}
MANIFEST = "_manifest.json"


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), posixpath.abspath(uri)


def unwritable(run_uri: str) -> str | None:
    """Why this process cannot create or write the local run folder `run_uri` (None: it can),
    found without writing anything. A URI's bucket is checked by its first write."""
    if "://" in run_uri:
        return None
    folder = Path(run_uri).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return f"{existing} is on a read-only file system"
    return f"{existing} is not writable by this user"


def part_name(first_index: int, uuids: list[str]) -> str:
    """Deterministic in the batch's rows, so a retried batch overwrites rather than duplicates."""
    digest = hashlib.sha1("\n".join(uuids).encode()).hexdigest()[:10]
    return f"part-{first_index:09d}-{digest}.parquet"


class RunStore:
    """Reads and writes one run's files; picklable (only the URI travels to actors)."""

    def __init__(self, run_uri: str):
        self.run_uri = run_uri
        self._fs = None
        self._root = None

    def __getstate__(self):
        return {"run_uri": self.run_uri}

    def __setstate__(self, state):
        self.__init__(state["run_uri"])

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs, self._root = _open(self.run_uri)
        return self._fs

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - resolves the root alongside the filesystem
        return self._root

    def kept_dir(self, step: str) -> str:
        return posixpath.join(self.root, KEPT_DIRS.get(step, step))

    def dropped_dir(self, step: str) -> str:
        return posixpath.join(self.root, "dropped", step)

    def write_atomic(self, path: str, write) -> None:
        """Call `write(tmp_path)` then rename tmp onto `path`."""
        with self.atomic(path) as tmp:
            write(tmp)

    @contextlib.contextmanager
    def atomic(self, path: str) -> Iterator[str]:
        """A temporary path to write; renamed onto `path` when the block ends without an
        error, deleted when it raises (several can be open at once: files written together)."""
        parent = posixpath.dirname(path)
        self.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuidlib.uuid4().hex}.tmp")
        try:
            yield tmp
            self.fs.move(tmp, path)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except (OSError, FileNotFoundError):
                pass
            raise

    def write_part(self, directory: str, name: str, table: pa.Table) -> str:
        path = posixpath.join(directory, name)
        self.write_atomic(path, lambda tmp: pq.write_table(table, tmp, filesystem=self.fs))
        return path

    def write_text(self, name: str, text: str) -> str:
        path = posixpath.join(self.root, name)

        def write(tmp: str) -> None:
            with self.fs.open_output_stream(tmp) as f:
                f.write(text.encode())

        self.write_atomic(path, write)
        return path

    def size(self, path: str) -> int | None:
        """A file's size in bytes; None where there is no file."""
        info = self.fs.get_file_info(path)
        return info.size if info.type == pafs.FileType.File else None

    def part_files(self, directory: str) -> list[str]:
        info = self.fs.get_file_info(directory)
        if info.type == pafs.FileType.NotFound:
            return []
        selector = pafs.FileSelector(directory, recursive=False)
        return sorted(
            f.path
            for f in self.fs.get_file_info(selector)
            if f.is_file
            and posixpath.basename(f.path).startswith("part-")
            and f.path.endswith(".parquet")
        )

    def read_parts(self, directory: str, columns: list[str] | None = None) -> pa.Table | None:
        files = self.part_files(directory)
        if not files:
            return None
        tables = [pq.read_table(f, columns=columns, filesystem=self.fs) for f in files]
        return pa.concat_tables(tables, promote_options="default")

    def done_uuids(self, step: str) -> set[str]:
        done: set[str] = set()
        for directory in (self.kept_dir(step), self.dropped_dir(step)):
            table = self.read_parts(directory, columns=["uuid"])
            if table is not None:
                done.update(table.column("uuid").to_pylist())
        return done

    def fingerprint(self, directory: str) -> list[list]:
        """[name, size] of each part file: what a global step's output was made from."""
        return [
            [posixpath.basename(f), self.fs.get_file_info(f).size]
            for f in self.part_files(directory)
        ]

    def read_manifest(self, directory: str) -> dict | None:
        path = posixpath.join(directory, MANIFEST)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def finished_stats(self, directory: str, made_from: dict) -> dict | None:
        """The stats a global step recorded if it finished from exactly `made_from`, else None."""
        manifest = self.read_manifest(directory)
        if manifest is None or manifest["made_from"] != json.loads(json.dumps(made_from)):
            return None
        return manifest["stats"]

    def write_manifest(self, directory: str, manifest: dict) -> None:
        text = json.dumps(manifest, indent=1, sort_keys=True)
        self.write_text(posixpath.relpath(posixpath.join(directory, MANIFEST), self.root), text)

    def clear_manifest(self, directory: str) -> None:
        """Before a global step rewrites its folder: a crash midway must not look done."""
        path = posixpath.join(directory, MANIFEST)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            self.fs.delete_file(path)

    def once(
        self, directory: str, made_from: dict, stats_type: type[S], make: Callable[[], S]
    ) -> S:
        """A global step's output in `directory`: `make()` (which writes it and returns its
        stats dataclass, with a `skipped` field), unless the folder's manifest says it was made
        from exactly `made_from`; then the recorded stats, `skipped=True`. The manifest is
        removed before `make()` and written after it, so a crash midway never looks done."""
        finished = self.finished_stats(directory, made_from)
        if finished is not None:
            return stats_type(**finished, skipped=True)
        self.clear_manifest(directory)
        stats = make()
        recorded = {k: v for k, v in dataclasses.asdict(stats).items() if k != "skipped"}
        self.write_manifest(directory, {"made_from": made_from, "stats": recorded})
        return stats

    def remove_parts(self, directory: str, keep: set[str]) -> list[str]:
        """Delete part files whose name is not in `keep` (outputs of inputs that are gone)."""
        stale = [f for f in self.part_files(directory) if posixpath.basename(f) not in keep]
        for f in stale:
            self.fs.delete_file(f)
        return stale
