"""Helpers for fault tests: run a step or the pipeline in a thread, count the rows a run has on
disk, and kill a Ray actor's process (found by its class name), or a vLLM engine core's process
under its actor, at a given moment."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq


def rows_on_disk(*directories: Path) -> int:
    """Rows in the part files of `directories` (parts renamed into place count once written)."""
    total = 0
    for directory in directories:
        for path in Path(directory).glob("part-*.parquet"):
            try:
                total += pq.read_metadata(path).num_rows
            except (FileNotFoundError, OSError):
                continue
    return total


# What a Ray actor process's title ends with while it runs its constructor or a call.
PHASES = {"starting": ".__init__", "working": ".submit"}


def actor_processes(class_name: str, phase: str | None = None) -> list[psutil.Process]:
    """Live Ray worker processes of this test session running an actor of `class_name`; with
    a phase, only those in it (Ray titles an actor's process `ray::<actor>.<method>`)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline()).strip()
            if (
                class_name in title
                and (phase is None or PHASES[phase] in title)
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


class BackgroundRun:
    """`run(*args, **kwargs)` (e.g. `pipeline.run`, a step's `run_step`) in a thread; `join()`
    returns its result or raises its error."""

    def __init__(self, run, *args, **kwargs):
        self.outcome: dict = {}
        self.thread = threading.Thread(target=self._run, args=(run, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, run, args, kwargs) -> None:
        try:
            self.outcome["result"] = run(*args, **kwargs)
        except BaseException as err:  # re-raised by join()
            self.outcome["error"] = err

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float):
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), f"the run did not finish within {timeout:.0f} s"
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["result"]


def kill_at(
    run: BackgroundRun,
    class_name: str,
    rows,
    threshold: int,
    phase: str | None = None,
    timeout: float = 300,
) -> int | None:
    """Once `rows()` reaches `threshold`, SIGKILL every live process of `class_name` (with a
    phase: only while one is in it, e.g. "starting": loading its model, "working": in a call);
    returns the rows on disk right after the kill, or None when the run ended first."""
    deadline = time.monotonic() + timeout
    while run.running and time.monotonic() < deadline:
        victims = actor_processes(class_name, phase) if rows() >= threshold else []
        if victims:
            for proc in victims:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(victims, timeout=10)
            return rows()
        time.sleep(0.05)
    return None


# vLLM's title for its engine core process (VLLM_ENABLE_V1_MULTIPROCESSING=1: a child of the
# process that made the engine, our engine actor).
ENGINE_CORE = "VLLM::EngineCore"


def kill_engine_core_at(
    run: BackgroundRun, rows, threshold: int, timeout: float = 600
) -> tuple[int, psutil.Process] | None:
    """Once `rows()` reaches `threshold`, SIGKILL one live vLLM engine core process (the
    engine, not its actor); returns the rows on disk right after the kill and the process that
    held the core (its actor), or None when the run ended first."""
    deadline = time.monotonic() + timeout
    while run.running and time.monotonic() < deadline:
        cores = actor_processes(ENGINE_CORE) if rows() >= threshold else []
        for core in cores:
            try:
                holder = core.parent()
                core.kill()
            except psutil.Error:
                continue
            psutil.wait_procs([core], timeout=10)
            return rows(), holder
        time.sleep(0.05)
    return None
