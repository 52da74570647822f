"""Config: every group option composes onto the schema; bad values fail fast with the fix."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from magpie_ray.config import Config, ConfigError, register
from magpie_ray.families.templates import BUILTIN_DIR as TEMPLATES
from magpie_ray.preflight import check_resources, preflight
from magpie_ray.validation import advice, validate_static

CONF = Path(__file__).resolve().parents[2] / "conf"
REPO = CONF.parent
register()


def _compose(*overrides) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return OmegaConf.to_object(compose(config_name="config", overrides=list(overrides)))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [
        f"{g}={o}"
        for g in (
            "model",
            "engine",
            "cluster",
            "experiment",
            "recipe",
            "preference_reward",
            "grid",
            "filter",
        )
        for o in _options(g)
    ],
)
def test_every_group_option_composes_onto_the_schema(override):
    local = override == "model=local"  # a path of yours; its family found from the tokenizer
    cfg = _compose(override, *(["model.path=/models/my-chat-model"] if local else []))
    assert isinstance(cfg, Config)
    assert cfg.model.path and (cfg.model.family or (local and cfg.model.family is None))


def test_default_is_the_embedded_smollm2_demo():
    cfg = _compose()
    assert cfg.model.family == "smollm2" and cfg.engine.kind == "vllm"
    assert cfg.generate.num_samples == 32
    assert cfg.model.path.endswith("models/smollm2-135m-instruct")
    assert cfg.cluster.cpus_per_actor < 1, "fractional CPUs, or Ray Data's tasks starve"


def test_experiment_magpie_air_uses_reference_sampling():
    cfg = _compose("experiment=magpie_air")
    assert cfg.model.family == "llama3" and cfg.cluster.gpus_per_actor == 1
    inst, resp = cfg.generate.instruction, cfg.generate.response
    assert (inst.temperature, inst.top_p, inst.max_tokens) == (1.0, 1.0, 2048)
    assert (resp.temperature, resp.max_tokens) == (0.0, 4096)


def test_unknown_key_is_rejected_by_the_schema():
    with pytest.raises(ConfigCompositionException):
        _compose("generate.num_sample=3")


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(Exception) as err:
        _compose("model=gpt5")
    assert "smollm2" in str(err.value) and "llama3-8b" in str(err.value)


def test_static_validation_names_each_problem(tmp_path):
    cfg = _compose(
        f"model.path={tmp_path}/nope",
        "generate.num_samples=0",
        "generate.instruction.top_p=1.5",
    )
    # Configs built in Python skip OmegaConf's choice checks: validation repeats them.
    cfg.engine.kind = "tgi"
    cfg.steps = ["generate", "finetune"]
    with pytest.raises(ConfigError) as err:
        validate_static(cfg)
    message = str(err.value)
    for needle in ("does not exist", "make model", "num_samples", "top_p", "tgi", "finetune"):
        assert needle in message


@pytest.mark.parametrize(
    "override, valid",
    [
        ("engine.kind=tgi", "[vllm, hf]"),
        ("steps=[generate,finetune]", "[generate, tag, dedup, select, export]"),
        ("judge.tasks=[vibes]", "[difficulty, quality, classification]"),
        ("export.formats=[csv]", "[sharegpt, messages, dpo, parquet]"),
        ("dedup.index=hnsw", "[auto, flat, ivf]"),
    ],
)
def test_closed_choices_are_rejected_when_the_config_is_composed(override, valid):
    with pytest.raises(ConfigCompositionException) as err:
        _compose(override)
    assert f"expected one of {valid}" in str(err.value.__cause__)


def test_extra_stop_strings_must_be_texts():
    with pytest.raises(ConfigError, match="extra_stop_strings"):
        validate_static(_compose("generate.instruction.extra_stop_strings=[assistant,'']"))
    assert _compose(
        "generate.instruction.extra_stop_strings=[assistant]"
    ).generate.instruction.extra_stop_strings == ["assistant"]


def test_reward_batch_limits_must_be_positive():
    cfg = _compose("reward.micro_batch_size=0", "reward.max_batch_tokens=-5")
    assert "tag" in cfg.steps
    with pytest.raises(ConfigError) as err:
        validate_static(cfg)
    assert "reward.micro_batch_size=0" in str(err.value)
    assert "reward.max_batch_tokens=-5" in str(err.value)
    validate_static(_compose("reward.max_batch_tokens=8192"))


def test_dedup_filter_and_export_values_are_checked():
    cfg = _compose(
        "filter=pro-6",
        "filter.top_k=null",
        "dedup.threshold=5",
        "filter.conditions=[{column: difficulty, op: '>=', value: medum}]",
    )
    cfg.dedup.index = "hnsw"  # closed choices: see test_closed_choices_are_rejected_...
    cfg.export.formats = ["alpaca"]
    with pytest.raises(ConfigError) as err:
        validate_static(cfg)
    message = str(err.value)
    for needle in ("balance_column needs filter.top_k", "threshold", "hnsw", "alpaca", "labels"):
        assert needle in message
    assert _compose().filter.name == "released"


def test_hub_ids_pass_static_checks_but_typos_in_local_paths_do_not(tmp_path):
    validate_static(_compose("model=llama3-8b"))
    with pytest.raises(ConfigError):
        validate_static(_compose(f"model.path={tmp_path}/missing/model"))


def test_advice_names_an_engine_that_can_never_run_full():
    # the GPU recipe keeps 256 x 4 rows in flight for 256 sequences: nothing to say
    assert advice(_compose("experiment=magpie_air")) == []
    starved = _compose("experiment=magpie_air", "generate.batch_size=16")
    (note,) = advice(starved)
    assert "= 64 rows" in note and "max_num_seqs=256" in note
    # a run smaller than the rows in flight, or an HF engine, is not starved by it
    assert advice(_compose("generate.batch_size=16", "generate.num_samples=32")) == []
    assert advice(_compose("experiment=magpie_air", "generate.batch_size=16", "engine=hf")) == []


def test_later_steps_run_without_the_generator_model(tmp_path):
    """Re-filtering a finished run needs no generator weights; generating still does."""
    missing = f"model.path={tmp_path}/gone"
    preflight(_compose(missing, "model.family=llama9", "steps=[dedup,select,export]"))
    with pytest.raises(ConfigError, match="does not exist"):
        preflight(_compose(missing, "steps=[generate]"))


def test_unknown_family_lists_the_valid_ones(smollm2_path):
    cfg = _compose(f"model.path={smollm2_path}", "model.family=llama9")
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert "llama3" in str(err.value) and "qwen2.5" in str(err.value)


def test_family_that_does_not_match_the_tokenizer_fails_before_loading(smollm2_path):
    cfg = _compose(f"model.path={smollm2_path}", "model.family=qwen2")
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert "<|im_start|>user" in str(err.value)


def test_a_generator_without_a_chat_template_needs_one_from_its_family(smollm2_path, tmp_path):
    """Tokenizer files only (no weights): the check must fail or pass before any model loads."""
    import json
    import shutil

    model = tmp_path / "no-template-model"
    model.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(smollm2_path / name, model / name)
    settings = json.loads((smollm2_path / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match="no chat template"):
        preflight(_compose(f"model.path={model}"))

    families = tmp_path / "families"
    families.mkdir()
    family = yaml.safe_load((TEMPLATES / "smollm2.yaml").read_text())
    family |= {
        "name": "smollm2-own",
        "chat_template": (smollm2_path / "chat_template.jinja").read_text(),
    }
    (families / "smollm2-own.yaml").write_text(yaml.safe_dump(family))
    preflight(
        _compose(f"model.path={model}", "model.family=smollm2-own", f"template_dirs=[{families}]")
    )


def test_grid_group_sets_the_paper_grids():
    cells = _compose("grid=pro").generate.instruction.grid
    assert [(c.temperature, c.top_p, c.weight) for c in cells] == [
        (1.0, 1.0, 3.0),
        (1.1, 0.995, 3.0),
        (1.2, 0.995, 3.0),
        (1.25, 0.99, 1.0),
    ]
    assert len(_compose("grid=air").generate.instruction.grid) == 12
    assert _compose().generate.instruction.grid == []


def test_bad_grid_and_mixture_weights_are_rejected():
    cfg = _compose(
        "grid=pro",
        "generate.instruction.grid.1.top_p=0",
        "++generate.system_prompts={math: -1}",
    )
    with pytest.raises(ConfigError) as err:
        validate_static(cfg)
    assert "grid[1].top_p=0" in str(err.value) and "system_prompts.math=-1" in str(err.value)


def test_domain_mixture_with_custom_prompt_passes_preflight(smollm2_path):
    cfg = _compose(
        f"model.path={smollm2_path}",
        "++generate.system_prompts={default: 2, math: 1, poetry: 1}",
        "+generate.custom_system_prompts.poetry='You write short poems on request.'",
    )
    preflight(cfg)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (
            ["model.family=gemma2", "++generate.system_prompts={math: 1}"],
            ["no system turn", "default"],
        ),
        (["++generate.system_prompts={poetry: 1}"], ["'poetry'", "'translation'"]),
        (
            ["model.family=mistral", "+generate.custom_system_prompts.poetry=Rhyme."],
            ["no system turn", "custom_system_prompts"],
        ),
    ],
)
def test_domain_mixture_the_family_cannot_serve_is_a_config_error(smollm2_path, overrides, needles):
    with pytest.raises(ConfigError) as err:
        preflight(_compose(f"model.path={smollm2_path}", *overrides))
    for needle in needles:
        assert needle in str(err.value)


def test_bad_turns_and_preference_settings_are_rejected():
    cfg = _compose(
        "generate.num_turns=0",
        "generate.preference.num_responses=1",
        "generate.preference.temperature=-1",
    )
    with pytest.raises(ConfigError) as err:
        validate_static(cfg)
    message = str(err.value)
    assert "num_turns=0" in message and "num_responses=1" in message
    assert "preference.temperature=-1" in message


def test_passes_and_start_retries_are_checked():
    cfg = _compose("generate.max_passes=0", "tag.max_passes=0", "cluster.actor_start_retries=-1")
    with pytest.raises(ConfigError) as err:
        validate_static(cfg)
    message = str(err.value)
    assert "generate.max_passes=0" in message and "tag.max_passes=0" in message
    assert "cluster.actor_start_retries=-1" in message


def test_multi_turn_needs_a_family_with_a_follow_up_template(smollm2_path, tmp_path):
    family = yaml.safe_load((TEMPLATES / "smollm2.yaml").read_text())
    family |= {"name": "single-turn", "follow_up_template": None}
    (tmp_path / "single-turn.yaml").write_text(yaml.safe_dump(family))
    cfg = _compose(
        f"model.path={smollm2_path}",
        "model.family=single-turn",
        f"template_dirs=[{tmp_path}]",
        "generate.num_turns=2",
    )
    with pytest.raises(ConfigError, match="no follow_up_template"):
        preflight(cfg)


def test_base_model_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate_static(_compose(f"generate.base.path={tmp_path}/no-base"))
    message = str(err.value)
    assert "no-base does not exist" in message
    assert "generate.base.kv_cache_gib is required" in message
    with pytest.raises(ConfigCompositionException):
        _compose(f"generate.base.path={tmp_path}", "generate.base.kind=tgi")
    tgi = _compose(f"generate.base.path={tmp_path}")
    tgi.generate.base.kind = "tgi"
    with pytest.raises(ConfigError, match="generate.base.kind='tgi'"):
        validate_static(tgi)
    gpu = _compose(
        "model=llama3-8b", "cluster=gpu", "generate.base.path=meta-llama/Meta-Llama-3-8B"
    )
    with pytest.raises(ConfigError, match="both engines share"):
        validate_static(gpu)
    gpu.generate.base.gpu_memory_utilization = 0.05
    validate_static(gpu)
    (tmp_path / "shots.yaml").write_text("preamble: Hi\n")
    gpu.generate.base.examples_file = str(tmp_path / "shots.yaml")
    with pytest.raises(ConfigError, match="examples_file: .*shots.yaml: expected"):
        validate_static(gpu)


def test_resources_the_cluster_cannot_hold_are_an_error():
    cfg = _compose("cluster=gpu")
    with pytest.raises(ConfigError) as err:
        check_resources(cfg, {"CPU": 2.0})
    assert "GPU: needs 8" in str(err.value)
    check_resources(_compose(), {"CPU": 2.0})


def test_streaming_needs_every_pool_of_both_steps_at_once():
    # local cluster: the engine actor 0.5 CPU; four tag pools of 0.25 and tag tasks 0.25
    check_resources(_compose(), {"CPU": 1.5})
    cfg = _compose("tag.stream=true")
    with pytest.raises(ConfigError) as err:
        check_resources(cfg, {"CPU": 1.5})
    assert "generate and tag steps' (streaming, tag.stream=true) actor pools" in str(err.value)
    assert "CPU: needs 1.75, cluster has 1.5" in str(err.value)
    assert "tag.stream=false" in str(err.value)
    check_resources(cfg, {"CPU": 1.75})
    # with one of the two steps alone nothing streams: each step's own total counts
    check_resources(_compose("tag.stream=true", "steps=[tag,dedup]"), {"CPU": 1.5})


@pytest.mark.parametrize(
    "args, needle",
    [
        (["model=nonexistent"], "Available options"),
        (["generate.bogus=1"], "bogus"),
        (["model.family=llama9"], "valid"),
        (["model.path=/no/such/model"], "does not exist"),
        (["engine.kind=tgi"], "expected one of [vllm, hf]"),
    ],
)
@pytest.mark.cli
def test_cli_rejects_bad_input_in_seconds(args, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "magpie_ray", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert "Loading" not in proc.stderr + proc.stdout, "no model may load on bad input"


def test_custom_actor_resources_count_against_the_cluster():
    cfg = _compose("cluster.num_actors=2", "+cluster.actor_resources.engine_slot=1")
    assert cfg.cluster.actor_resources == {"engine_slot": 1.0}
    check_resources(cfg, {"CPU": 2.0, "engine_slot": 2.0})
    with pytest.raises(ConfigError) as err:
        check_resources(cfg, {"CPU": 2.0, "engine_slot": 1.0})
    assert "engine_slot: needs 2, cluster has 1" in str(err.value)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("engine.kv_cache_gib=-3", "engine.kv_cache_gib=-3.0: must be > 0"),
        (
            "engine.gpu_memory_utilization=1.5",
            "engine.gpu_memory_utilization=1.5: must be in (0, 1]",
        ),
        ("engine.max_num_seqs=0", "engine.max_num_seqs=0: must be >= 1"),
        ("model.tensor_parallel_size=0", "model.tensor_parallel_size=0: must be >= 1"),
        ("judge.kv_cache_gib=0", "judge.kv_cache_gib=0.0: must be > 0"),
        ("engine.start_timeout_s=0", "engine.start_timeout_s=0.0: must be > 0 (seconds)"),
        ("judge.start_timeout_s=0", "judge.start_timeout_s=0.0: must be > 0 (seconds)"),
        ("embedder.start_timeout_s=-1", "embedder.start_timeout_s=-1.0: must be > 0 (seconds)"),
    ],
)
def test_engine_numbers_are_checked_before_any_engine_starts(override, needle):
    with pytest.raises(ConfigError) as err:
        validate_static(_compose(override))
    assert needle in str(err.value)


def test_extra_engine_kwargs_are_checked_against_the_installed_vllm():
    validate_static(
        _compose(
            "+engine.extra_kwargs.enable_prefix_caching=false",
            "+judge.extra_kwargs.max_num_batched_tokens=8192",
        )
    )
    with pytest.raises(ConfigError) as err:
        validate_static(_compose("+engine.extra_kwargs.max_num_batched_tokenz=4096"))
    assert "engine.extra_kwargs.max_num_batched_tokenz: not an engine argument" in str(err.value)
    assert "did you mean max_num_batched_tokens" in str(err.value)
    with pytest.raises(ConfigError, match="set it with its own config key"):
        validate_static(_compose("+engine.extra_kwargs.max_model_len=99"))
    with pytest.raises(ConfigError, match="but this engine is hf"):
        validate_static(_compose("engine=hf", "+engine.extra_kwargs.quantization=fp8"))


def test_extra_engine_kwargs_reach_vllm_and_win_over_ours():
    from magpie_ray.engines.base import EngineSettings
    from magpie_ray.engines.lifecycle import engine_settings
    from magpie_ray.engines.vllm_engine import llm_kwargs

    cfg = _compose("+engine.extra_kwargs.max_num_batched_tokens=4096")
    settings = engine_settings(cfg.engine.kind, cfg.model, cfg.engine, 0)
    assert isinstance(settings, EngineSettings)
    assert llm_kwargs(settings, on_gpu=False)["max_num_batched_tokens"] == 4096


def test_quiet_actors_turn_off_vllms_own_loading_bar(monkeypatch):
    """vLLM's checkpoint-loading bar ignores TQDM_DISABLE (quiet actors' env): turned off by
    an argument the installed vLLM has; a user's extra_kwargs still win."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    from magpie_ray.console import QUIET_ACTOR_ENV
    from magpie_ray.engines.lifecycle import engine_settings
    from magpie_ray.engines.vllm_engine import llm_kwargs

    cfg = _compose()
    settings = engine_settings(cfg.engine.kind, cfg.model, cfg.engine, 0)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert "use_tqdm_on_load" not in llm_kwargs(settings, on_gpu=False)
    monkeypatch.setenv("TQDM_DISABLE", QUIET_ACTOR_ENV["TQDM_DISABLE"])
    assert llm_kwargs(settings, on_gpu=False)["use_tqdm_on_load"] is False
    assert "use_tqdm_on_load" in {f.name for f in dataclasses.fields(EngineArgs)}
    mine = _compose("+engine.extra_kwargs.use_tqdm_on_load=true")
    settings = engine_settings(mine.engine.kind, mine.model, mine.engine, 0)
    assert llm_kwargs(settings, on_gpu=False)["use_tqdm_on_load"] is True


def test_pipeline_parallelism_runs_vllms_ray_executor_on_exactly_its_gpus():
    """model.pipeline_parallel_size > 1: vLLM's ray executor with tensor x pipeline workers;
    each engine actor's placement group is exactly those GPUs, so gpus_per_actor must say so."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    from magpie_ray.engines.lifecycle import engine_settings
    from magpie_ray.engines.vllm_engine import llm_kwargs

    args = (
        "model.tensor_parallel_size=8",
        "model.pipeline_parallel_size=2",
        "cluster.num_actors=1",
        "engine.gpu_memory_utilization=0.9",
    )
    cfg = _compose(*args, "cluster.gpus_per_actor=16")
    validate_static(cfg)
    check_resources(cfg, {"CPU": 200, "GPU": 16})
    with pytest.raises(ConfigError, match=r"GPU: needs 16, cluster has 8"):
        check_resources(cfg, {"CPU": 200, "GPU": 8})
    kwargs = llm_kwargs(engine_settings(cfg.engine.kind, cfg.model, cfg.engine, 0), on_gpu=True)
    assert (kwargs["tensor_parallel_size"], kwargs["pipeline_parallel_size"]) == (8, 2)
    assert kwargs["distributed_executor_backend"] == "ray"
    assert {"pipeline_parallel_size", "distributed_executor_backend"} <= {
        f.name for f in dataclasses.fields(EngineArgs)
    }
    one_stage = _compose("model.tensor_parallel_size=8", "cluster.gpus_per_actor=8")
    settings = engine_settings(one_stage.engine.kind, one_stage.model, one_stage.engine, 0)
    assert "distributed_executor_backend" not in llm_kwargs(settings, on_gpu=True)

    with pytest.raises(ConfigError) as err:
        validate_static(_compose(*args, "cluster.gpus_per_actor=8"))
    assert "cluster.gpus_per_actor=8 with model.tensor_parallel_size=8 x" in str(err.value)
    assert "set it to 16" in str(err.value)
    with pytest.raises(ConfigError, match="needs engine.kind=vllm"):
        validate_static(_compose(*args, "cluster.gpus_per_actor=16", "engine=hf"))
    with pytest.raises(ConfigError, match="set it with its own config key"):
        validate_static(_compose("+engine.extra_kwargs.pipeline_parallel_size=2"))


def test_an_engine_pool_makes_at_most_one_placement_group_per_actor(monkeypatch):
    """Ray Data may ask for more actors than the pool holds at once (replacements): they reuse
    the pool's groups in turn instead of holding GPUs no actor uses; a pass's end removes them."""
    import sys

    import ray.util
    import ray.util.placement_group

    from magpie_ray.steps import actor_pools

    pg_module = sys.modules["ray.util.placement_group"]  # ray.util's name is the function

    made, removed = [], []

    class Group:
        def __init__(self, bundles, strategy):
            self.bundles, self.strategy = bundles, strategy
            made.append(self)

    monkeypatch.setattr(pg_module, "placement_group", Group)
    monkeypatch.setattr(ray.util, "remove_placement_group", removed.append)
    monkeypatch.setattr(
        "ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy",
        lambda group, placement_group_capture_child_tasks: (
            group,
            placement_group_capture_child_tasks,
        ),
    )
    bundles = actor_pools.engine_placement(4, 2.0, {"engine_slot": 1})
    assert bundles == [{"GPU": 1.0, "CPU": 2.0, "engine_slot": 1}] + [{"GPU": 1.0}] * 3
    groups = actor_pools.PlacementGroups(bundles, limit=2)
    given = [groups()["scheduling_strategy"] for _ in range(5)]
    assert len(made) == 2 and all(g.strategy == "PACK" and g.bundles == bundles for g in made)
    assert [g for g, _ in given] == [made[0], made[1], made[0], made[1], made[0]]
    assert all(capture for _, capture in given), "vLLM's workers must land in the group"
    with actor_pools.engine_failures():
        pass
    assert sorted(map(id, removed)) == sorted(map(id, made))
