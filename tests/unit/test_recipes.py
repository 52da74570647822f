"""Presets against the official scripts (magpie-align/magpie scripts/magpie-*.sh at b734a36) and
the paper's grid shares. The expected values are written here from the scripts, apart from the
YAML files, so a preset that drifts from its script fails."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from magpie_ray.config import Config, register
from magpie_ray.steps.generate.seeds import make_seed_rows

CONF = Path(__file__).resolve().parents[2] / "conf"
register()

# recipe: (model id, tensor parallel, instruction (T, top_p, max_tokens, stop at newline,
# sanitize, banned first-token prefixes, flaming factor), response (T, top_p, max_tokens))
_DEFAULT_INS = (1.0, 1.0, 2048, True, False, [], None)
_GREEDY = (0.0, 1.0, 4096)
SCRIPTS = {
    "llama3-8b": ("meta-llama/Meta-Llama-3-8B-Instruct", 1, _DEFAULT_INS, _GREEDY),
    "llama3-70b": ("meta-llama/Meta-Llama-3-70B-Instruct", 4, _DEFAULT_INS, _GREEDY),
    "llama3.1-8b": (
        "meta-llama/Meta-Llama-3.1-8B-Instruct",
        1,
        (0.8, 1.0, 1024, False, True, ["#"], None),
        (0.6, 0.9, 4096),
    ),
    "llama3.1-70b": (
        "meta-llama/Meta-Llama-3.1-70B-Instruct",
        4,
        (0.9, 1.0, 1024, False, True, ["#"], None),
        (0.6, 0.9, 4096),
    ),
    "llama3.3-70b": (
        "meta-llama/Llama-3.3-70B-Instruct",
        4,
        (1.0, 1.0, 1024, False, True, [], None),
        _GREEDY,
    ),
    "llama2-7b": ("meta-llama/Llama-2-7b-chat-hf", 1, _DEFAULT_INS, _GREEDY),
    "llama2-70b": ("meta-llama/Llama-2-70b-chat-hf", 4, _DEFAULT_INS, _GREEDY),
    "gemma7b": ("google/gemma-1.1-7b-it", 1, _DEFAULT_INS, _GREEDY),
    "gemma2-9b": ("google/gemma-2-9b-it", 1, (1.0, 1.0, 512, False, True, [], None), (0, 1, 2048)),
    "gemma2-27b": (
        "google/gemma-2-27b-it",
        1,
        (1.0, 1.0, 512, False, True, [], None),
        (0.0, 1.0, 2048),
    ),
    "mistral7b": ("mistralai/Mistral-7B-Instruct-v0.3", 1, _DEFAULT_INS, _GREEDY),
    "vicuna-7b": ("lmsys/vicuna-7b-v1.5", 1, _DEFAULT_INS, _GREEDY),
    "yi34b": ("01-ai/Yi-1.5-34B-Chat", 4, _DEFAULT_INS, _GREEDY),
    "phi3mini": ("microsoft/Phi-3-mini-128k-instruct", 1, _DEFAULT_INS, _GREEDY),
    "phi3small": ("microsoft/Phi-3-small-128k-instruct", 1, _DEFAULT_INS, _GREEDY),
    "phi3medium": ("microsoft/Phi-3-medium-128k-instruct", 1, _DEFAULT_INS, _GREEDY),
    "deepseek-coderv2-lite": (
        "deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct",
        1,
        _DEFAULT_INS,
        _GREEDY,
    ),
    "qwen2-7b": ("Qwen/Qwen2-7B-Instruct", 1, _DEFAULT_INS, _GREEDY),
    "qwen2-72b": ("Qwen/Qwen2-72B-Instruct", 4, _DEFAULT_INS, _GREEDY),
    "qwen2-math-7b": ("Qwen/Qwen2-Math-7B-Instruct", 1, _DEFAULT_INS, _GREEDY),
    "qwen2.5-3b": ("Qwen/Qwen2.5-3B-Instruct", 1, (0.7, 1.0, 2048, True, False, [], None), _GREEDY),
    "qwen2.5-7b": ("Qwen/Qwen2.5-7B-Instruct", 1, (0.7, 1.0, 2048, True, False, [], None), _GREEDY),
    "qwen2.5-14b": (
        "Qwen/Qwen2.5-14B-Instruct",
        2,
        (0.7, 1.0, 2048, True, False, [], None),
        _GREEDY,
    ),
    "qwen2.5-32b": (
        "Qwen/Qwen2.5-32B-Instruct",
        4,
        (0.6, 1.0, 2048, True, False, [], None),
        _GREEDY,
    ),
    "qwen2.5-72b": (
        "Qwen/Qwen2.5-72B-Instruct",
        4,
        (0.6, 1.0, 2048, True, False, [], None),
        _GREEDY,
    ),
    "qwen2.5-32b-coder": ("Qwen/Qwen2.5-Coder-32B-Instruct", 4, _DEFAULT_INS, _GREEDY),
    "qwen2.5-math-72b": (
        "Qwen/Qwen2.5-Math-72B-Instruct",
        4,
        (0.6, 0.9, 2048, True, False, [], 1.2),
        (0.6, 0.9, 4096),
    ),
}
PAPER = {"magpie-air": "llama3-8b", "magpie-pro": "llama3-70b", "multi-turn": "llama3-8b"}


def _compose(*overrides) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return OmegaConf.to_object(compose(config_name="config", overrides=list(overrides)))


def test_every_recipe_file_is_an_official_script_or_a_paper_preset():
    assert sorted(p.stem for p in (CONF / "recipe").glob("*.yaml")) == sorted({*SCRIPTS, *PAPER})


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_recipe_has_its_scripts_settings(name):
    model_id, tp, ins, res = SCRIPTS[name]
    cfg = _compose(f"recipe={name}")
    inst, resp = cfg.generate.instruction, cfg.generate.response
    assert (cfg.model.name, cfg.model.path, cfg.model.tensor_parallel_size) == (
        model_id,
        model_id,
        tp,
    )
    assert cfg.cluster.gpus_per_actor == tp
    got = (
        inst.temperature,
        inst.top_p,
        inst.max_tokens,
        inst.stop_at_newline,
        inst.sanitize,
        inst.banned_first_token_prefixes,
        inst.flaming_tokens,
    )
    assert got == ins
    assert (inst.min_p, inst.grid) == (0.0, [])
    # the scripts that sanitize use the reference's truncation rule
    assert inst.sanitizer == ("reference" if inst.sanitize else None)
    assert (resp.temperature, resp.top_p, resp.max_tokens, resp.repetition_penalty) == (*res, 1.0)
    assert cfg.generate.num_turns == 1


def test_paper_presets_are_their_script_plus_the_grid_and_its_shares():
    air, pro = _compose("recipe=magpie-air"), _compose("recipe=magpie-pro")
    assert air.model.name == SCRIPTS["llama3-8b"][0] and pro.model.name == SCRIPTS["llama3-70b"][0]
    air_cells = {(c.temperature, c.top_p): c.weight for c in air.generate.instruction.grid}
    assert air_cells == {
        (t, p): (1.0 if t == 1.25 else 3.0)
        for t in (1.0, 1.1, 1.2, 1.25)
        for p in (1.0, 0.995, 0.99)
    }
    pro_cells = [(c.temperature, c.top_p, c.weight) for c in pro.generate.instruction.grid]
    assert pro_cells == [(1.0, 1.0, 3), (1.1, 0.995, 3), (1.2, 0.995, 3), (1.25, 0.99, 1)]
    assert (
        _compose("experiment=magpie_air").generate.instruction.grid == air.generate.instruction.grid
    )


def test_multi_turn_preset_samples_follow_ups_as_gen_mt():
    cfg = _compose("recipe=multi-turn")
    fu = cfg.generate.follow_up
    assert cfg.generate.num_turns == 2 and cfg.model.name == SCRIPTS["llama3-8b"][0]
    assert (fu.temperature, fu.top_p, fu.min_p, fu.sanitize, fu.banned_first_token_prefixes) == (
        1.0,
        1.0,
        0.0,
        False,
        [],
    )
    assert fu.max_tokens == 4096 and cfg.generate.response.temperature == 0.0


def test_follow_up_sampling_defaults_to_the_references():
    fu = _compose().generate.follow_up
    assert (fu.temperature, fu.top_p, fu.sanitize, fu.banned_first_token_prefixes) == (
        1.0,
        1.0,
        False,
        [],
    )


@pytest.mark.parametrize(
    "grid, shares",
    [
        (
            "air",
            {
                **{(t, p): 3 / 30 for t in (1.0, 1.1, 1.2) for p in (1.0, 0.995, 0.99)},
                **{(1.25, p): 1 / 30 for p in (1.0, 0.995, 0.99)},
            },
        ),
        ("pro", {(1.0, 1.0): 0.3, (1.1, 0.995): 0.3, (1.2, 0.995): 0.3, (1.25, 0.99): 0.1}),
    ],
)
def test_grid_shares_on_10000_seed_rows_are_the_papers(grid, shares):
    """Air 3M: 300K per T<=1.2 cell, 100K per T=1.25 cell; Pro 1M: 300K, 300K, 300K, 100K."""
    cfg = _compose(f"grid={grid}")
    rows = make_seed_rows("shares", 0, 10_000, cfg.generate)
    counts = Counter((r["temperature"], r["top_p"]) for r in rows)
    assert set(counts) == set(shares)
    for cell, share in shares.items():
        assert abs(counts[cell] / 10_000 - share) <= 0.01 * share, (cell, counts[cell])
