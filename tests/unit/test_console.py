"""The quiet console: our lines and real warnings on the console, the rest in the log file."""

import io
import logging
import warnings

import pytest

from magpie_ray import console


@pytest.fixture
def routed(tmp_path):
    """A console handler on the root and on `ray.data` (which keeps its own, as Ray Data does),
    both routed by console.setup; everything set up is taken down again."""
    import ray.data  # noqa: F401 - its import sets up the `ray.data` handlers, as in a run

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    own = logging.StreamHandler(out)
    root, data = logging.getLogger(), logging.getLogger("ray.data")
    saved = (root.level, data.propagate, data.level)
    root.addHandler(handler)
    data.addHandler(own)
    data.propagate = False
    data.setLevel(logging.DEBUG)
    log_file = tmp_path / "logs" / "driver.log"
    try:
        yield out, log_file
    finally:
        for logger, h in ((root, handler), (data, own)):
            logger.removeHandler(h)
        for logger in (root, data, logging.getLogger("ray"), logging.getLogger("py.warnings")):
            for h in list(logger.handlers):
                if isinstance(h, logging.FileHandler) and h.baseFilename == str(log_file):
                    logger.removeHandler(h)
        logging.captureWarnings(False)
        root.level, data.propagate = saved[0], saved[1]
        data.setLevel(saved[2])
        console._active = None


def test_quiet_console_keeps_steps_and_warnings_and_files_the_rest(routed):
    out, log_file = routed
    console.setup(quiet=True, log_file=str(log_file))
    logging.getLogger("magpie_ray.progress").info("generate: 8 / 32 rows (25%)")
    logging.getLogger("ray.data").info("Running Dataset: dataset_1. Execution plan: ...")
    logging.getLogger("ray.data").warning("an actor died")
    logging.getLogger("some_library.engine").info("Initializing a V1 LLM engine")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old argument", DeprecationWarning, stacklevel=1)
        warnings.warn("the tokenizer has no pad token", UserWarning, stacklevel=1)
    shown, filed = out.getvalue(), log_file.read_text()
    assert "generate: 8 / 32 rows" in shown and "an actor died" in shown
    assert "pad token" in shown
    for quiet in ("Execution plan", "Initializing a V1", "old argument"):
        assert quiet not in shown, f"{quiet!r} reached the quiet console:\n{shown}"
        assert quiet in filed, f"{quiet!r} is missing from the log file:\n{filed}"


def test_verbose_console_shows_everything_and_still_files_it(routed):
    out, log_file = routed
    console.setup(quiet=False, log_file=str(log_file))
    logging.getLogger("ray.data").info("Running Dataset: dataset_2")
    assert "Running Dataset: dataset_2" in out.getvalue()
    assert "Running Dataset: dataset_2" in log_file.read_text()


def test_log_path_and_actor_env():
    assert console.log_path(None, "/data/out/demo", "demo") == "/data/out/demo/logs/driver.log"
    assert console.log_path(None, "s3://b/out/demo", "demo").endswith("magpie-ray/demo-driver.log")
    assert console.log_path("/tmp/x.log", "/data/out/demo", "demo") == "/tmp/x.log"
    assert console.actor_env(True, {"A": "1"}) == {**console.QUIET_ACTOR_ENV, "A": "1"}
    assert console.actor_env(True, {"VLLM_LOGGING_LEVEL": "DEBUG"})["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert console.actor_env(False, {"A": "1"}) == {"A": "1"}
