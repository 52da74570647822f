"""magpie_ray.redact: credential-like actor_env values never reach the written config.yaml, the
run keeps the real ones, and ordinary settings stay readable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from magpie_ray.config import Config, register
from magpie_ray.redact import REDACTED, looks_like_credential, redact_env, redacted

CONF = Path(__file__).resolve().parents[2] / "conf"
PLANTED = "hf_planted0123456789abcdef"
register()


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "hf_token",
        "HFTOKEN",
        "RAY_AUTH_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "WANDB_API_KEY",
        "OPENAI_APIKEY",
        "DB_PASSWORD",
        "PGPASSWD",
        "SSH_PASSPHRASE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "MY_CREDS",
        "client-secret",
    ],
)
def test_credential_names_are_recognised(name):
    assert looks_like_credential(name)


@pytest.mark.parametrize(
    "name",
    ["OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "VLLM_ENABLE_V1_MULTIPROCESSING", "HF_HOME"],
)
def test_ordinary_settings_are_not_credentials(name):
    assert not looks_like_credential(name)


def test_redact_env_replaces_only_credential_values_and_leaves_its_input_alone():
    env = {"HF_TOKEN": PLANTED, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    assert redact_env(env) == {
        "HF_TOKEN": REDACTED,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    assert env["HF_TOKEN"] == PLANTED


def test_a_planted_secret_never_reaches_the_config_text_but_the_run_keeps_it():
    """The composed config as `python -m magpie_ray` builds it, with a token planted on the
    command line; the config text is built the way __main__ builds it."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        dcfg = compose(
            config_name="config",
            overrides=[
                f"+cluster.actor_env.HF_TOKEN={PLANTED}",
                "cluster.actor_env.OMP_NUM_THREADS=3",
            ],
        )
    cfg: Config = OmegaConf.to_object(dcfg)

    text = OmegaConf.to_yaml(OmegaConf.structured(redacted(cfg)))

    assert PLANTED not in text, f"the planted token is in the config text:\n{text}"
    written = OmegaConf.create(text)
    assert written.cluster.actor_env.HF_TOKEN == REDACTED
    assert written.cluster.actor_env.OMP_NUM_THREADS == "3", "non-secrets stay as they were"
    assert written.run_name == cfg.run_name and written.model.path == cfg.model.path
    assert cfg.cluster.actor_env["HF_TOKEN"] == PLANTED, "the run itself must keep the real value"
