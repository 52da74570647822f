"""Config schemas: plain dataclasses, registered in Hydra's ConfigStore by `register()`.

Hydra composes `conf/` YAML onto these schemas; everything past `__main__` receives a `Config`
object, never a DictConfig. Closed choices are `StrEnum`s (in `choices.py`, re-exported here), so
OmegaConf rejects an unknown value at compose time with the valid ones listed. This module and
`choices` (and `sampling_config`, the generate step's sampling schemas) are the bottom layer: they
import nothing else of ours. Checks that need more than a
type live in `validation.py`; model paths are resolved once, by `paths.resolve_paths`, where a
run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .choices import (  # noqa: F401 - re-exported: the schema's closed choices
    ConfigError,
    EngineKind,
    ExportFormat,
    IndexKind,
    JudgeTask,
    Mode,
    PreQuery,
    SanitizerRules,
    Step,
    Thinking,
)
from .sampling_config import (  # noqa: F401 - re-exported: generate.* sampling schemas
    DecodingCell,
    FollowUpSampling,
    InstructionSampling,
    PreferenceSampling,
    ResponseSampling,
)


@dataclass
class ModelFields:
    """What every model of a run has: a recorded name, where its weights are, how to load them."""

    name: str = "???"  # recorded in the rows (`model`, `reward_model`, ...)
    path: str = "???"  # local folder, `pkg:<package>/<sub/path>`, or a Hub id on clusters
    dtype: str = "auto"  # "auto": bfloat16 on GPU, float32 on CPU
    trust_remote_code: bool = False
    prepare_hint: str = ""  # how to make `path` when it is missing, shown in the error
    # The license its Hub model card gives (`apache-2.0`, `llama3.1`; `other` with a
    # license_name and license_link): the dataset card carries it forward unless the model
    # folder's own README.md front matter says otherwise (presets and recipes set it).
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None


@dataclass
class ModelConfig(ModelFields):
    """The generator: an aligned chat model and its template family."""

    name: str = "smollm2-135m-instruct"
    # a YAML in magpie_ray/families/shipped/; null: found from the local tokenizer's template
    family: str | None = "smollm2"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    # Pipeline stages of one engine, across nodes: > 1 runs vLLM's `ray` executor, each engine
    # actor in a placement group of its own (tensor x pipeline GPUs, packed node by node).
    pipeline_parallel_size: int = 1


@dataclass
class EngineConfig:
    """Which inference engine serves the generator, and its memory settings."""

    kind: EngineKind = EngineKind.vllm
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None  # KV-cache size; required on CPU, optional on GPU
    # More vLLM engine arguments (quantization, kv_cache_dtype, max_num_batched_tokens,
    # enable_prefix_caching, ...): checked against the installed vLLM's EngineArgs at preflight.
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    enforce_eager: bool = False
    max_num_seqs: int = 256
    hf_batch_size: int = 16  # rows per forward pass in the HF engine
    # Seconds the generate step's engines (generator, base, responder) may take to become
    # ready; a start that takes longer fails like any start failure. Generous: a 405B model
    # read from network storage onto 16 GPUs can take 20 minutes; this catches a hung start.
    start_timeout_s: float = 1800.0


@dataclass
class ActorEngineFields(ModelFields):
    """A second model in the generator's engine actor (base model, responder): off with
    `path: null`; it shares the actor's GPUs, so its memory share plus
    engine.gpu_memory_utilization (plus the other's) must stay under 1."""

    name: str = ""  # recorded in the rows; "" = path
    path: str | None = None
    kind: EngineKind = EngineKind.vllm
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.4
    kv_cache_gib: float | None = None  # required on CPU, like engine.kv_cache_gib
    # More vLLM engine arguments (quantization, kv_cache_dtype, max_num_batched_tokens,
    # enable_prefix_caching, ...): checked against the installed vLLM's EngineArgs at preflight.
    extra_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class BaseModelConfig(ActorEngineFields):
    """An optional base (non-chat) model that answers every first instruction through in-context
    examples (URIAL-style), for the paper's reward difference; `name` is recorded in
    `base_generator`, `path` is a local folder or Hub id (e.g. Meta-Llama-3-8B)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    examples_file: str | None = None  # None = the package's magpie_ray/examples/urial.yaml


@dataclass
class ResponderConfig(ActorEngineFields):
    """An optional second model that writes the responses (instructions still come from
    `model`), as Magpie-Reasoning and MagpieLM did; `name` is recorded in
    `gen_response_configs.output_generator`. Responses sample with `generate.response`."""

    gpu_memory_utilization: float = 0.45
    family: str | None = None  # its template family (required with a path): stops, thinking


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
    follow_up: FollowUpSampling = field(default_factory=FollowUpSampling)
    preference: PreferenceSampling = field(default_factory=PreferenceSampling)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    responder: ResponderConfig = field(default_factory=ResponderConfig)


@dataclass
class ClusterConfig:
    """Where the job runs and how the engine actor pool is sized."""

    address: str | None = None  # None: RAY_ADDRESS when set (ray job submit), else a local Ray
    # How long a run waits for the cluster at `address` to answer before it stops with exit 2
    # (a head that is still starting gets this long).
    connect_timeout_s: float = 60.0
    num_cpus: int | None = None  # CPUs of a local Ray; None = all
    num_actors: int = 1
    # Autoscaling: the pool starts at num_actors and grows to max_actors while batches wait (Ray
    # Data asks an autoscaling cluster for the nodes they need), shrinking back when idle.
    # None: a fixed pool of num_actors.
    max_actors: int | None = None
    # Batches each actor works on at once; they share its engine, so while one batch waits for
    # its longest response the others keep the engine full.
    batches_in_flight: int = 4
    cpus_per_actor: float = 1.0
    # GPUs of one engine actor: >= tensor_parallel_size on GPU clusters; with
    # model.pipeline_parallel_size > 1, exactly tensor x pipeline (its placement group's).
    gpus_per_actor: float = 0.0
    actor_env: dict[str, str] = field(default_factory=dict)  # env vars of engine actors
    check_resources: bool = True  # fail at start when the pool cannot fit the cluster
    # Consecutive deaths of engine or tagger actors while they start (a node lost while a
    # model loads, a crashed load) that a pool replaces before the run fails.
    actor_start_retries: int = 3
    # Custom Ray resources each engine actor needs (Ray's `resources=`): pins actors to node
    # types, e.g. {"accelerator_type:H100": 0.001}, or one actor per node when every node
    # advertises one unit of a resource (`ray start --resources`).
    actor_resources: dict[str, float] = field(default_factory=dict)
    # What one GPU-hour of this cluster costs (USD): the summary, report and dataset card then
    # give the run's cost per million output tokens and per thousand kept rows
    gpu_hour_usd: float | None = None


@dataclass
class PoolConfig:
    """How one tagging model's Ray Data actor pool is sized."""

    num_actors: int = 1
    max_actors: int | None = None  # autoscaling from num_actors up to this; None = fixed
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 32  # rows per actor call


@dataclass
class TaggerModel(ModelFields):
    """A tagging model: on or off, honest about stand-ins, with its own actor pool."""

    enabled: bool = True
    stand_in: bool = False  # not the real model: the recorded name says "stand-in:"
    pool: PoolConfig = field(default_factory=PoolConfig)
    # Seconds the model may take to load in its actor; longer fails like any start failure.
    start_timeout_s: float = 1800.0

    @property
    def recorded_name(self) -> str:
        return f"stand-in:{self.name}" if self.stand_in else self.name

    def engines(self, key: str) -> list[tuple[str, Any, str]]:
        """(config key, config, engine kind) of every model this tagger loads at `key`."""
        return [(key, self, str(self.engine))]


@dataclass
class PreferenceRewardConfig(ModelFields):
    """The reward model that scores preference samples (`responses`) and picks chosen and
    rejected; path null = the reward model itself (no second load). The reference scores
    instruct_reward with FsfairX and preference samples with ArmoRM (conf/preference_reward)."""

    name: str = ""  # recorded in `preference_reward_model`; "" = path
    path: str | None = None
    engine: EngineKind = EngineKind.hf
    max_length: int = 4096
    micro_batch_size: int = 8
    max_batch_tokens: int | None = None
    kv_cache_gib: float | None = None  # vllm on CPU actors
    # More vLLM engine arguments (quantization, kv_cache_dtype, max_num_batched_tokens,
    # enable_prefix_caching, ...): checked against the installed vLLM's EngineArgs at preflight.
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    gpu_memory_utilization: float = 0.45  # vllm on GPU, next to the reward model


@dataclass
class RewardConfig(TaggerModel):
    """A Hugging Face sequence-classification reward model (FsfairX, Skywork, ArmoRM)."""

    name: str = "sfairXC/FsfairX-LLaMA3-RM-v0.1"  # recorded in `reward_model`
    path: str = "sfairXC/FsfairX-LLaMA3-RM-v0.1"
    engine: EngineKind = EngineKind.hf  # hf (micro-batches) | vllm (pooling runner)
    max_length: int = 4096  # tokens; longer conversations are truncated
    micro_batch_size: int = 8  # hf: conversations per forward pass, sorted by length
    # hf: padded tokens (rows x longest) per forward pass; None = micro_batch_size x max_length.
    # Out of GPU memory, a batch is split in two and this cap lowered for the actor.
    max_batch_tokens: int | None = None
    kv_cache_gib: float | None = None  # vllm on CPU actors
    # More vLLM engine arguments (quantization, kv_cache_dtype, max_num_batched_tokens,
    # enable_prefix_caching, ...): checked against the installed vLLM's EngineArgs at preflight.
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    gpu_memory_utilization: float = 0.9  # vllm on GPU
    preference_min_margin: float = 0.0  # chosen - rejected reward must reach it
    preference: PreferenceRewardConfig = field(default_factory=PreferenceRewardConfig)

    def engines(self, key: str) -> list[tuple[str, Any, str]]:
        own = [(key, self, str(self.engine))]
        if self.preference.path in (None, self.path):
            return own
        return [*own, (f"{key}.preference", self.preference, str(self.preference.engine))]


@dataclass
class LMTaggerConfig(TaggerModel):
    """A generative tagging model (guard or judge) served by one of our engines."""

    engine: EngineKind = EngineKind.vllm  # hf decodes unconstrained
    max_model_len: int = 8192
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None  # required on CPU actors with vllm
    # More vLLM engine arguments (quantization, kv_cache_dtype, max_num_batched_tokens,
    # enable_prefix_caching, ...): checked against the installed vLLM's EngineArgs at preflight.
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    max_num_seqs: int = 256
    max_tokens: int = 256  # the longest reply read


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
    tasks: list[JudgeTask] = field(default_factory=lambda: list(JudgeTask))


@dataclass
class EmbedderConfig(TaggerModel):
    name: str = "sentence-transformers/all-mpnet-base-v2"
    path: str = "sentence-transformers/all-mpnet-base-v2"
    encode_batch_size: int = 64
    max_seq_length: int | None = None

    def engines(self, key: str) -> list[tuple[str, Any, str]]:
        return [(key, self, "sentence-transformers")]


@dataclass
class TagConfig:
    """The tag step: which model-free tags run, and how its part files are cut."""

    part_rows: int = 256  # rows per tagged part file
    language: bool = True  # instruction language (py3langid)
    task_cpus: float = 1.0  # CPUs of each Ray Data read / tag / write task
    # Passes over the untagged rows: rows a pass did not write (a lost node) go through again;
    # rows still untagged after the last pass make the run exit non-zero.
    max_passes: int = 3
    # Tag rows as generate writes them (one Ray Data pipeline; every pool must fit at once).
    stream: bool = False


@dataclass
class DedupConfig:
    """Global near-duplicate search over instruction embeddings (magpie_ray/near_duplicates.py)."""

    embedding_column: str = "embedding"  # list<float32>, L2-normalised; null = no embedding
    k: int = 500  # the reference's k-NN size: repeat_count is capped at k
    threshold: float = 0.05  # squared L2 under which two rows are near duplicates (cos > 0.975)
    index: IndexKind = IndexKind.auto
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
    # Topic clusters (k-means over the embeddings, k ~ sqrt(rows / 2)): a `topic` column, the
    # clusters in the report, the summary and the dataset card, and filter.balance_by=topic
    topics: bool = True


@dataclass
class Condition:
    """One filter predicate: a row is kept when `<column> <op> <value>` holds; null never does.

    ops: > >= < <= == != (ordinal on input_quality / difficulty labels), in, not_in,
    not_endswith, contains, not_contains (case-sensitive substrings of strings), newlines_lt
    (fewer than `value` line breaks in the text).
    A row whose `unless_column` value is one of `unless_in` passes whatever its `column` holds
    (the cards' "instructions with fewer than 5 line breaks, except for coding & debugging").
    """

    column: str = "???"
    op: str = ">="
    value: Any = None
    unless_column: str | None = None
    unless_in: list[Any] | None = None


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
    # A cap per label of this column (task_category, difficulty, ...), after the conditions and
    # before the top-k: no label holds more than max_share of the kept rows (the longest
    # responses of a label over its cap are kept, ties by uuid; a null label is a label too)
    balance_by: str | None = None
    max_share: float | None = None


@dataclass
class ExportConfig:
    """Files written from the selected rows under `<run>/exports/` (`export_formats.py`)."""

    formats: list[ExportFormat] = field(default_factory=lambda: list(ExportFormat))
    include_embedding: bool = False  # keep the embedding column in the Parquet export
    # Reasoning text of thinking models: `reasoning_content` on assistant messages of
    # messages.jsonl and the reasoning columns in data.parquet; off = answers only.
    include_reasoning: bool = False
    # data.parquet also gets the released multi-turn columns: instruction_2, response_2, ...
    # up to the longest conversation (turn 1 is `instruction` / `response`, as in gen_mt.py)
    turn_columns: bool = False
    # data.parquet also holds the preference rewards under this name in the released DPO sets'
    # shape, a list of {score} (e.g. "rewards_armorm", set by preference_reward=armorm); None = no
    preference_rewards_column: str | None = None
    # exports/README.md: a Hugging Face dataset card (license, configs, features, the row
    # funnel, statistics of the kept rows, how to reproduce the run) and config.yaml beside it
    card: bool = True
    # A Hub dataset repo id (org/name): the summary ends with the command that uploads
    # exports/ there; the run itself sends nothing over the network
    hub_repo: str | None = None


@dataclass
class ProbeConfig:
    """`mode=probe`: instructions sampled from each pre-query variant (steps/generate/probe.py)."""

    samples: int = 64


@dataclass
class Config:
    mode: Mode = Mode.run
    run_name: str = "demo"
    output_dir: str = "outputs"  # a local path or a URI; absolute under `ray job submit`
    seed: int = 0
    steps: list[Step] = field(default_factory=lambda: list(Step))
    template_dirs: list[str] = field(default_factory=list)  # extra family YAML folders
    examples_to_print: int = 3
    progress_every_s: float = 30.0  # a progress line per row-wise step this often; 0 = off
    quiet: bool = True  # console: steps, notes, warnings, summary; the rest in the log file
    log_file: str | None = None  # None: <run>/logs/driver.log (a temp file for URI runs)
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
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def run_uri(self) -> str:
        return f"{self.output_dir.rstrip('/')}/{self.run_name}"


def register() -> None:
    """Register the schema so Hydra type-checks every YAML and override against it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="magpie_schema", node=Config)
