"""What a run prints: its own lines, real warnings and the summary; the rest goes to a log file.

With `quiet` (the default) the console shows the `magpie_ray` loggers at INFO (step and progress
lines, notes) and every other logger only at WARNING or above: Ray's start-up lines, Ray Data's
execution plans and per-operator statistics go to the log file only, and the engine and tagger
actors run with `QUIET_ACTOR_ENV` (vLLM's logging at ERROR, no deprecation notices or loading
bars), so their start-up chatter never reaches the driver. The log file (`log_file`, default
`<run>/logs/driver.log`; a temp file when the run folder is a URI) gets everything the driver
logs at INFO and above, libraries' advisory warnings (`_ADVISORY`), and, from the CLI, what
native code writes to the process's stderr (`route_native_stderr`). `quiet=false` leaves every
library's console output as it comes. Ray keeps each actor's full output in its own session
logs (`/tmp/ray/session_latest/logs`, or the dashboard's Logs tab).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from .paths import is_uri

# Engine and tagger actors' environment in quiet mode (a user's cluster.actor_env wins): vLLM's
# advisory warnings (most of them about the CPU backend here), libraries' deprecation notices,
# checkpoint-loading bars and torch's C++ warnings stay in the actors' own Ray logs.
QUIET_ACTOR_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
    "TQDM_DISABLE": "1",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    # torch's Python loggers at ERROR: no "Triton not available" from every CPU actor
    "TORCH_LOGS": "-torch",
}
# Libraries' warnings that are advice about a setting, not about this run going wrong: the log
# file keeps them. (Ray says token auth is on each time the run starts its own local Ray.)
_ADVISORY = ("Token authentication is enabled for this Ray cluster",)
# Loggers that keep handlers of their own (propagate=False): their console handlers are quieted
# and the log file is added to them.
_OWN_HANDLER_LOGGERS = ("ray", "ray.data")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DEVELOPER_WARNINGS = ("DeprecationWarning", "FutureWarning", "PendingDeprecationWarning")
_active: tuple[bool, str] | None = None  # the last setup(), re-applied once Ray has connected
_console_stream = None  # the console's stderr once route_native_stderr moved fd 2 to the log


def log_path(quiet_log_file: str | None, run_uri: str, run_name: str) -> str:
    """Where the driver's log goes: the configured file, the run folder's logs/driver.log, or a
    temp file for a run folder that is a URI."""
    if quiet_log_file:
        return quiet_log_file
    if is_uri(run_uri):
        return str(Path(tempfile.gettempdir()) / "magpie-ray" / f"{run_name}-driver.log")
    return str(Path(run_uri) / "logs" / "driver.log")


class _ConsoleFilter(logging.Filter):
    """Passes this package's records from INFO up, and everyone's warnings and errors except
    libraries' deprecation notices (those are for their developers; the log file keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("magpie_ray"):
            return True
        message = record.getMessage()
        if record.name == "py.warnings":
            return not any(kind in message for kind in _DEVELOPER_WARNINGS)
        return record.levelno >= logging.WARNING and not message.startswith(_ADVISORY)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def setup(quiet: bool, log_file: str) -> None:
    """Route the driver's logging (call before Ray starts; again after, since Ray sets up its
    own handlers when it connects). Idempotent."""
    global _active
    _active = (quiet, log_file)
    # Ray and Ray Data set up their loggers' handlers on import: route those too.
    import ray.data  # noqa: F401

    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    file_handler = _file_handler(log_file)
    root = logging.getLogger()
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    for logger in (root, *map(logging.getLogger, _OWN_HANDLER_LOGGERS)):
        if logger is not root and not logger.handlers:
            continue  # not set up yet: its records reach the root's handlers
        if file_handler not in logger.handlers:
            logger.addHandler(file_handler)
        if not quiet:
            continue
        for handler in logger.handlers:
            if _is_console(handler) and not any(
                isinstance(f, _ConsoleFilter) for f in handler.filters
            ):
                handler.addFilter(_ConsoleFilter())
    if quiet:
        logging.captureWarnings(True)  # warnings become py.warnings records: file + filter


def route_native_stderr(log_file: str) -> None:
    """The CLI in quiet mode: what native code writes to this process's stderr (Ray's C++
    core worker, e.g. its note on actor constructor arguments in the object store, and the
    local Ray's processes started from here) goes to the log file; Python's own stderr (our
    lines, warnings, tracebacks, actors' output that Ray forwards) stays on the console. Once
    per process; not for library use, where the caller owns the process's stderr."""
    global _console_stream
    if _console_stream is not None:
        return
    sys.stderr.flush()
    console = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    previous, sys.stderr, _console_stream = sys.stderr, console, console
    for logger in (logging.getLogger(), *map(logging.getLogger, _OWN_HANDLER_LOGGERS)):
        for handler in logger.handlers:
            if _is_console(handler) and handler.stream is previous:
                handler.setStream(console)


def reapply() -> None:
    """After Ray connects (it installs console handlers of its own): the last `setup` again,
    and Ray Data's progress bars and plans off in quiet mode. Nothing when `setup` never ran."""
    if _active is None:
        return
    setup(*_active)
    if _active[0]:
        quiet_ray_data()


_handlers: dict[str, logging.Handler] = {}


def _file_handler(path: str) -> logging.Handler:
    handler = _handlers.get(path)
    if handler is None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(_FORMAT))
        _handlers[path] = handler
    return handler


def actor_env(quiet: bool, env: dict[str, str]) -> dict[str, str]:
    """The engine and tagger actors' environment: `env` (cluster.actor_env) over the quiet
    defaults."""
    return {**QUIET_ACTOR_ENV, **env} if quiet else dict(env)


def quiet_ray_data() -> None:
    """Ray Data's own console output off: no progress bars (the steps print their own lines)
    and no execution plan at each start."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    # Its memory advice ("consider setting memory=...") once an hour, not every 30 seconds.
    ctx.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = 3600
    # Ray Data warns once that its bars are off; we turned them off on purpose.
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")
