"""Generate step: pre-query template -> instruction -> response, on a Ray Data actor pool.

Reads seed rows (see `seeds.py`). Writes `generated/` parts with the columns of
`GENERATED_SCHEMA` (the released Magpie fields that apply, plus finish reasons and token counts)
and `dropped/generate/` parts for rows dropped with a reason:

- `instruction_truncated`: the instruction hit its max_tokens (finish_reason "length")
- `instruction_empty`: nothing but whitespace before the stop
- `prompt_too_long`: the response prompt leaves no room under model.max_model_len
- `response_empty`: the response is empty

Each engine actor loads its model once and serves both calls of every row it gets; it writes a
part file per batch itself (atomically), so finished batches survive a crash of anything else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .. import templates
from ..config import GenerateConfig, model_source
from ..engines import Completion, Engine, EngineSettings, SamplingSpec, chat_prompt_ids, encode
from ..storage import DROPPED_SCHEMA, RunStore, part_name
from .seeds import DEFAULT_SYSTEM_PROMPT, make_seed_rows

STEP = "generate"

_TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
GENERATED_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("model", pa.string()),
        (
            "gen_input_configs",
            pa.struct(
                [
                    ("temperature", pa.float64()),
                    ("top_p", pa.float64()),
                    ("min_p", pa.float64()),
                    ("max_tokens", pa.int64()),
                    ("input_generator", pa.string()),
                    ("seed", pa.int64()),
                    ("pre_query_template", pa.string()),
                    ("system_prompt_key", pa.string()),
                    ("stop_at_newline", pa.bool_()),
                ]
            ),
        ),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("conversations", pa.list_(_TURN)),
        (
            "gen_response_configs",
            pa.struct(
                [
                    ("temperature", pa.float64()),
                    ("top_p", pa.float64()),
                    ("max_tokens", pa.int64()),
                    ("output_generator", pa.string()),
                    ("engine", pa.string()),
                ]
            ),
        ),
        ("instruction_finish_reason", pa.string()),
        ("response_finish_reason", pa.string()),
        ("instruction_tokens", pa.int64()),
        ("response_tokens", pa.int64()),
        ("response_prompt_tokens", pa.int64()),
        ("index", pa.int64()),
    ]
)


@dataclass(frozen=True)
class GenerateSettings:
    """Everything an engine actor needs; small and picklable."""

    engine: EngineSettings
    family_name: str
    template_dirs: tuple[str, ...]
    model_name: str
    generate: GenerateConfig
    run_uri: str


@dataclass
class BatchResult:
    kept: list[dict]
    dropped: list[dict]
    output_tokens: int


def _drop(row: dict, reason: str, detail: str = "") -> dict:
    return {
        "uuid": row["uuid"],
        "index": row["index"],
        "step": STEP,
        "reason": reason,
        "detail": detail,
    }


def instruction_specs(
    rows: Sequence[dict], family: templates.Family, stop_ids: Sequence[int], cfg: GenerateConfig
) -> list[SamplingSpec]:
    stops = tuple(family.stop_strings) + (("\n",) if cfg.instruction.stop_at_newline else ())
    return [
        SamplingSpec(
            temperature=row["temperature"],
            top_p=row["top_p"],
            min_p=row["min_p"],
            max_tokens=row["max_tokens"],
            seed=row["seed"],
            stop=stops,
            stop_token_ids=tuple(stop_ids),
        )
        for row in rows
    ]


def response_spec(
    row: dict,
    prompt_len: int,
    family: templates.Family,
    stop_ids: Sequence[int],
    cfg: GenerateConfig,
    max_model_len: int,
) -> SamplingSpec:
    """Sampling of one row's response; its budget never overruns the context window."""
    res = cfg.response
    return SamplingSpec(
        temperature=res.temperature,
        top_p=res.top_p,
        max_tokens=min(
            row.get("response_max_tokens") or res.max_tokens, max_model_len - prompt_len
        ),
        seed=row["seed"],
        stop=tuple(family.stop_strings),
        stop_token_ids=tuple(stop_ids),
        ignore_eos=bool(row.get("ignore_eos")),
    )


def generate_rows(
    engine: Engine,
    family: templates.Family,
    rows: Sequence[dict],
    cfg: GenerateConfig,
    model_name: str,
    engine_kind: str,
    max_model_len: int,
) -> BatchResult:
    """Instruction then response for `rows` (seed rows); pure apart from the engine calls.

    Each row's response is submitted the moment its instruction is done, so the engine never
    waits for the slowest instruction of the batch. Optional row keys `response_max_tokens` and
    `ignore_eos` override the response sampling per row (benchmark workloads use them).
    """
    tokenizer = engine.tokenizer
    stop_ids = templates.stop_token_ids_for(family, tokenizer)
    pre_queries = [templates.render_pre_query(family, r["system_prompt_key"]) for r in rows]
    prompt_cache: dict[str, list[int]] = {}
    prompts = [prompt_cache.setdefault(q, encode(tokenizer, q)) for q in pre_queries]
    specs = instruction_specs(rows, family, stop_ids, cfg)
    waiting = {engine.submit(p, s): i for i, (p, s) in enumerate(zip(prompts, specs, strict=True))}

    res = cfg.response
    dropped: list[dict] = []
    pending: list[tuple[int, Completion, list[int], SamplingSpec, Future]] = []
    instructions: list[Completion] = []
    for future in as_completed(waiting):
        i, done = waiting[future], future.result()
        row = rows[i]
        instructions.append(done)
        text = done.text.strip()
        if done.finish_reason == "length":
            dropped.append(_drop(row, "instruction_truncated", done.text))
            continue
        if not text:
            dropped.append(_drop(row, "instruction_empty", done.text))
            continue
        ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": text}])
        if len(ids) >= max_model_len:
            dropped.append(_drop(row, "prompt_too_long", text))
            continue
        spec = response_spec(row, len(ids), family, stop_ids, cfg, max_model_len)
        pending.append((i, done, ids, spec, engine.submit(ids, spec)))

    pending.sort(key=lambda item: item[0])
    responses = [fut.result() for *_, fut in pending]
    output_tokens = sum(c.num_output_tokens for c in instructions + responses)
    kept: list[dict] = []
    for (i, inst, ids, spec, _), resp in zip(pending, responses, strict=True):
        row, pre_query = rows[i], pre_queries[i]
        instruction, response = inst.text.strip(), resp.text.strip()
        if not response:
            dropped.append(_drop(row, "response_empty", instruction))
            continue
        kept.append(
            {
                "uuid": row["uuid"],
                "model": model_name,
                "gen_input_configs": {
                    "temperature": row["temperature"],
                    "top_p": row["top_p"],
                    "min_p": row["min_p"],
                    "max_tokens": row["max_tokens"],
                    "input_generator": model_name,
                    "seed": row["seed"],
                    "pre_query_template": pre_query,
                    "system_prompt_key": row["system_prompt_key"],
                    "stop_at_newline": cfg.instruction.stop_at_newline,
                },
                "instruction": instruction,
                "response": response,
                "conversations": [
                    {"from": "human", "value": instruction},
                    {"from": "gpt", "value": response},
                ],
                "gen_response_configs": {
                    "temperature": res.temperature,
                    "top_p": res.top_p,
                    "max_tokens": spec.max_tokens,
                    "output_generator": model_name,
                    "engine": engine_kind,
                },
                "instruction_finish_reason": inst.finish_reason,
                "response_finish_reason": resp.finish_reason,
                "instruction_tokens": inst.num_output_tokens,
                "response_tokens": resp.num_output_tokens,
                "response_prompt_tokens": len(ids),
                "index": row["index"],
            }
        )
    dropped.sort(key=lambda d: d["index"])
    return BatchResult(kept=kept, dropped=dropped, output_tokens=output_tokens)


def resolve_family(family: templates.Family, cfg: GenerateConfig) -> templates.Family:
    """`family` with the run's custom system prompts; raises `TemplateError` when the domain
    mixture names a prompt the family lacks, or any prompt for a family without a system turn."""
    family = templates.with_system_prompts(family, cfg.custom_system_prompts)
    for key in cfg.system_prompts:
        if key != DEFAULT_SYSTEM_PROMPT:
            templates.render_pre_query(family, key)
    return family


def prepare_family(settings: GenerateSettings, tokenizer) -> templates.Family:
    family = resolve_family(
        templates.load_family(settings.family_name, settings.template_dirs), settings.generate
    )
    templates.validate_against_tokenizer(family, tokenizer)
    return family


class GenerateActor:
    """Ray Data actor: one engine, loaded once; `__call__` takes a batch of seed rows."""

    def __init__(self, settings: GenerateSettings):
        from ..engines import load_engine, load_tokenizer

        started = time.perf_counter()
        # The template is checked against the tokenizer before the (slow) model load.
        self.family = prepare_family(
            settings, load_tokenizer(settings.engine.model_path, settings.engine.trust_remote_code)
        )
        self.settings = settings
        self.engine = load_engine(settings.engine)
        self.store = RunStore(settings.run_uri)
        self.load_seconds = time.perf_counter() - started
        self._reported_load = False

    def __call__(self, batch: pa.Table) -> dict:
        rows = batch.to_pylist()
        started = time.time()
        s = self.settings
        result = generate_rows(
            self.engine,
            self.family,
            rows,
            s.generate,
            s.model_name,
            s.engine.kind,
            s.engine.max_model_len,
        )
        first = min(r["index"] for r in rows)
        name = part_name(first, [r["uuid"] for r in rows])
        # Each uuid lands in exactly one of the two files, so a crash between the writes only
        # leaves the second file's rows undone; a resume regenerates them, never duplicates.
        if result.dropped:
            table = pa.Table.from_pylist(result.dropped, schema=DROPPED_SCHEMA)
            self.store.write_part(self.store.dropped_dir(STEP), name, table)
        if result.kept:
            table = pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)
            self.store.write_part(self.store.kept_dir(STEP), name, table)
        load_seconds = 0.0 if self._reported_load else self.load_seconds
        self._reported_load = True
        return {
            "rows": [len(rows)],
            "kept": [len(result.kept)],
            "output_tokens": [result.output_tokens],
            "started_at": [started],
            "finished_at": [time.time()],
            "load_seconds": [load_seconds],
        }


@dataclass(frozen=True)
class StepStats:
    """What one invocation of the step did (a resumed run counts only its own work)."""

    rows_todo: int
    rows_done_before: int
    rows_processed: int
    rows_kept: int
    output_tokens: int
    wall_seconds: float  # the whole step, actor start-up included
    generation_seconds: float  # first batch started -> last batch finished, on any actor
    engine_load_seconds: float  # the slowest actor's model load


def settings_from(cfg) -> GenerateSettings:
    m, e = cfg.model, cfg.engine
    return GenerateSettings(
        engine=EngineSettings(
            kind=e.kind,
            model_path=str(Path(m.path).expanduser())
            if model_source(m.path) == "local"
            else m.path,
            dtype=m.dtype,
            max_model_len=m.max_model_len,
            tensor_parallel_size=m.tensor_parallel_size,
            trust_remote_code=m.trust_remote_code,
            gpu_memory_utilization=e.gpu_memory_utilization,
            kv_cache_gib=e.kv_cache_gib,
            enforce_eager=e.enforce_eager,
            max_num_seqs=e.max_num_seqs,
            hf_batch_size=e.hf_batch_size,
            seed=cfg.seed,
        ),
        family_name=m.family,
        template_dirs=tuple(cfg.template_dirs),
        model_name=m.name,
        generate=cfg.generate,
        run_uri=cfg.run_uri,
    )


def run_step(cfg, store: RunStore, seeds: list[dict] | None = None) -> StepStats:
    """Generate every seed row not already in `generated/` or `dropped/generate/`.

    `seeds` replaces the rows made from the config (benchmarks pass synthetic workloads).
    """
    import ray.data

    gen = cfg.generate
    if seeds is None:
        seeds = make_seed_rows(cfg.run_name, cfg.seed, gen.num_samples, gen)
    done = store.done_uuids(STEP)
    todo = [row for row in seeds if row["uuid"] not in done]
    started = time.perf_counter()
    processed = kept = tokens = 0
    load_seconds = 0.0
    first_start, last_finish = float("inf"), 0.0
    if todo:
        cl = cfg.cluster
        blocks = min(len(todo), max(1, -(-len(todo) // gen.batch_size)))
        ds = ray.data.from_items(todo, override_num_blocks=blocks).map_batches(
            GenerateActor,
            fn_constructor_kwargs={"settings": settings_from(cfg)},
            batch_size=gen.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                size=cl.num_actors,
                max_concurrent_calls_per_actor=cl.batches_in_flight,
                enable_true_multi_threading=cl.batches_in_flight > 1,
            ),
            num_cpus=cl.cpus_per_actor,
            num_gpus=cl.gpus_per_actor,
            runtime_env={"env_vars": dict(cl.actor_env)} if cl.actor_env else None,
        )
        for stats in ds.iter_rows():
            processed += stats["rows"]
            kept += stats["kept"]
            tokens += stats["output_tokens"]
            load_seconds = max(load_seconds, stats["load_seconds"])
            first_start = min(first_start, stats["started_at"])
            last_finish = max(last_finish, stats["finished_at"])
    return StepStats(
        rows_todo=len(todo),
        rows_done_before=len(seeds) - len(todo),
        rows_processed=processed,
        rows_kept=kept,
        output_tokens=tokens,
        wall_seconds=time.perf_counter() - started,
        generation_seconds=max(0.0, last_finish - first_start),
        engine_load_seconds=load_seconds,
    )
