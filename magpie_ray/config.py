"""Config schemas (plain dataclasses) and their validation.

Hydra composes `conf/` YAML onto these schemas (registered in the ConfigStore by `register()`);
everything past `__main__` receives a `Config` object, never a DictConfig. `validate_static`
checks what can be checked without a model, a tokenizer or a cluster, and raises `ConfigError`
naming the fix; `pipeline.preflight` adds the checks that need the tokenizer and the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEPS = ("generate", "dedup", "select", "export")
# dedup, select and export read the tag step's `tagged/` rows, which this branch does not write
# yet; `steps=[dedup,select,export]` runs them on a run folder that has them.
DEFAULT_STEPS = ("generate",)
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
class InstructionSampling:
    """Sampling of the user instruction from the pre-query template (reference defaults)."""

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 2048
    stop_at_newline: bool = True  # the reference's "early stopping": one line per instruction
    system_prompt: str | None = None  # a named system prompt of the family, None = default


@dataclass
class ResponseSampling:
    """Sampling of the assistant response (greedy by default, as the reference)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096


@dataclass
class GenerateConfig:
    num_samples: int = 32
    batch_size: int = 16  # rows per engine call and per part file
    instruction: InstructionSampling = field(default_factory=InstructionSampling)
    response: ResponseSampling = field(default_factory=ResponseSampling)


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
    steps: list[str] = field(default_factory=lambda: list(DEFAULT_STEPS))
    template_dirs: list[str] = field(default_factory=list)  # extra family YAML folders
    examples_to_print: int = 3
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
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


def model_source(path: str) -> str:
    """'local' for an existing folder, 'hub' for an org/name id, else 'missing'."""
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
    if cfg.model.path in ("", "???"):
        problems.append("model.path is not set: pass model.path=/path/to/hf-folder")
    elif model_source(cfg.model.path) == "missing":
        hint = f" ({cfg.model.prepare_hint})" if cfg.model.prepare_hint else ""
        problems.append(f"model.path={cfg.model.path} does not exist{hint}")
    gen = cfg.generate
    if gen.num_samples < 1:
        problems.append(f"generate.num_samples={gen.num_samples}: must be >= 1")
    if gen.batch_size < 1:
        problems.append(f"generate.batch_size={gen.batch_size}: must be >= 1")
    for name, s in (("instruction", gen.instruction), ("response", gen.response)):
        if s.temperature < 0:
            problems.append(f"generate.{name}.temperature={s.temperature}: must be >= 0")
        if not 0 < s.top_p <= 1:
            problems.append(f"generate.{name}.top_p={s.top_p}: must be in (0, 1]")
        if not 0 < s.max_tokens < cfg.model.max_model_len:
            problems.append(
                f"generate.{name}.max_tokens={s.max_tokens}: must be in "
                f"[1, model.max_model_len={cfg.model.max_model_len})"
            )
    if not 0 <= gen.instruction.min_p < 1:
        problems.append(f"generate.instruction.min_p={gen.instruction.min_p}: must be in [0, 1)")
    cl = cfg.cluster
    if cl.num_actors < 1:
        problems.append(f"cluster.num_actors={cl.num_actors}: must be >= 1")
    if cl.batches_in_flight < 1:
        problems.append(f"cluster.batches_in_flight={cl.batches_in_flight}: must be >= 1")
    if cl.cpus_per_actor < 0 or cl.gpus_per_actor < 0:
        problems.append("cluster.cpus_per_actor and cluster.gpus_per_actor must be >= 0")
    if cl.gpus_per_actor and cl.gpus_per_actor < cfg.model.tensor_parallel_size:
        problems.append(
            f"cluster.gpus_per_actor={cl.gpus_per_actor} < model.tensor_parallel_size="
            f"{cfg.model.tensor_parallel_size}: each engine actor needs one GPU per shard"
        )
    if not cl.gpus_per_actor and cfg.engine.kind == "vllm" and cfg.engine.kv_cache_gib is None:
        problems.append(
            "engine.kv_cache_gib is required on CPU actors (cluster.gpus_per_actor=0): "
            "set e.g. engine.kv_cache_gib=1"
        )
    problems.extend(dedup_problems(cfg.dedup))
    from .select import filter_problems

    problems.extend(filter_problems(cfg.filter))
    unknown_formats = [f for f in cfg.export.formats if f not in EXPORT_FORMATS]
    if unknown_formats:
        problems.append(f"export.formats: unknown {unknown_formats}; valid: {list(EXPORT_FORMATS)}")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


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
