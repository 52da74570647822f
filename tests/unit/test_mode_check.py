"""`python -m magpie_ray mode=check`: every preflight check, then exit without loading weights.
Run on a folder holding only a real tokenizer and an official chat template, as a user pointing
`model.path` at Qwen2-Instruct or Gemma-2-it would."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "data" / "chat_templates"


def _tokenizer_folder(tmp_path: Path, tokenizer: Path, template: str) -> Path:
    """A model folder with only tokenizer files; its chat template is the official one."""
    folder = tmp_path / template.removesuffix(".jinja")
    folder.mkdir()
    shutil.copy(tokenizer / "tokenizer.json", folder)
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    config["chat_template"] = (TEMPLATES / template).read_text(encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _check(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "magpie_ray", "mode=check", "steps=[generate]", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.cli
@pytest.mark.parametrize(
    "family, tokenizer, template, rendered",
    [
        ("qwen2", "qwen2_5", "Qwen--Qwen2-7B-Instruct.jinja", "You are a helpful assistant."),
        ("gemma2", "gemma2", "google--gemma-2-9b-it.jinja", "<start_of_turn>user\\n'"),
    ],
)
def test_official_templates_pass_with_their_declared_deviation(
    tmp_path, family, tokenizer, template, rendered
):
    from tests.conftest import asset

    folder = _tokenizer_folder(tmp_path, asset(f"tokenizers/{tokenizer}"), template)
    done = _check(f"model.path={folder}", f"model.family={family}")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"ok: model.family={family} vs {folder}" in out
    assert "the pre-query differs from the chat template on purpose" in out
    assert rendered in out, out
    assert "checks passed; nothing was loaded or run" in out
    assert "Loading" not in out + done.stderr, "mode=check must not load a model"


def test_a_failing_check_names_both_strings(tmp_path):
    """The same checks in-process (the CLI turns ConfigError into exit status 2)."""
    from magpie_ray.config import Config, ConfigError, ModelConfig
    from magpie_ray.pipeline import check
    from tests.conftest import asset

    folder = _tokenizer_folder(tmp_path, asset("tokenizers/qwen2_5"), "google--gemma-2-9b-it.jinja")
    cfg = Config(steps=["generate"], model=ModelConfig(path=str(folder), family="qwen2"))
    cfg.engine.kv_cache_gib = 1
    cfg.generate.response.max_tokens = 1024
    with pytest.raises(ConfigError, match="does not match the tokenizer's chat template") as err:
        check(cfg)
    assert "Fix:" in str(err.value) and "<start_of_turn>" in str(err.value)
