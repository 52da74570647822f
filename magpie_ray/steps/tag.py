"""Tag step: every generated row through the tagging models, streaming, into `tagged/`.

Reads `generated/` parts. Writes `tagged/` parts holding every generated column plus the
columns of `TAG_FIELDS` (REFERENCE.md's names where the released datasets have them):

    text tags   language, instruction_length, response_length              (text_tags.py)
    reward      instruct_reward, reward_model, base_reward, reward_difference,
                rewards, chosen, rejected, preference_pair_reason           (reward.py)
    guard       llama_guard_2, safety, safety_categories, safety_model       (safety.py)
    judge       difficulty, intent, knowledge, input_quality, quality_explanation,
                task_category, other_task_category, *_generator              (judge.py)
    embedder    embedding (L2-normalised list<float32>), embedding_model      (embed.py)
    tag_errors  list of {tag, reason}: why a tag is null (malformed model output)

One Ray Data pipeline: read -> text tags -> one actor pool per enabled model (sized by its
`pool` config) -> a writer task per `tag.part_rows` rows. Every pool works at once on different
batches, so no model waits for another's whole pass. A disabled model leaves its columns null.
No row is dropped. Parts are atomic and named by their rows; a rerun skips uuids already in
`tagged/`, so a killed tag step resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..config import Config, PoolConfig, resolve_model_path
from ..storage import RunStore, part_name

log = logging.getLogger(__name__)

STEP = "tag"
SOURCE_STEP = "generate"

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
TAG_ERROR = pa.struct([("tag", pa.string()), ("reason", pa.string())])
TAG_FIELDS: dict[str, pa.DataType] = {
    "language": pa.string(),
    "instruction_length": pa.int64(),
    "response_length": pa.int64(),
    "instruct_reward": pa.float64(),
    "reward_model": pa.string(),
    "base_reward": pa.float64(),
    "reward_difference": pa.float64(),
    "rewards": pa.list_(pa.float64()),
    "chosen": pa.list_(_MESSAGE),
    "rejected": pa.list_(_MESSAGE),
    "preference_pair_reason": pa.string(),
    "llama_guard_2": pa.string(),
    "safety": pa.string(),
    "safety_categories": pa.list_(pa.string()),
    "safety_model": pa.string(),
    "difficulty": pa.string(),
    "intent": pa.string(),
    "knowledge": pa.string(),
    "difficulty_generator": pa.string(),
    "input_quality": pa.string(),
    "quality_explanation": pa.string(),
    "quality_generator": pa.string(),
    "task_category": pa.string(),
    "other_task_category": pa.list_(pa.string()),
    "task_category_generator": pa.string(),
    "embedding": pa.list_(pa.float32()),
    "embedding_model": pa.string(),
    "tag_errors": pa.list_(TAG_ERROR),
}


def add_columns(table: pa.Table, columns: dict[str, list]) -> pa.Table:
    """`table` with tag columns set (replaced if present), typed as `TAG_FIELDS` says."""
    for name, values in columns.items():
        array = pa.array(values, type=TAG_FIELDS[name])
        index = table.schema.get_field_index(name)
        if index >= 0:
            table = table.set_column(index, name, array)
        else:
            table = table.append_column(name, array)
    return table


def append_errors(table: pa.Table, errors: list[list[tuple[str, str]]]) -> pa.Table:
    """Adds each row's (tag, reason) pairs to its `tag_errors` list."""
    if "tag_errors" in table.column_names:
        before = table.column("tag_errors").to_pylist()
    else:
        before = [None] * table.num_rows
    merged = [
        (old or []) + [{"tag": tag, "reason": reason} for tag, reason in new]
        for old, new in zip(before, errors, strict=True)
    ]
    return add_columns(table, {"tag_errors": merged})


def conform(table: pa.Table) -> pa.Table:
    """Every tag column present (null where its model is disabled), in `TAG_FIELDS` order."""
    tag_names = [name for name in TAG_FIELDS]
    base = [name for name in table.column_names if name not in TAG_FIELDS]
    for name in tag_names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, TAG_FIELDS[name]))
    return table.select(base + tag_names)


def drop_done(table: pa.Table, done: frozenset) -> pa.Table:
    """Rows whose uuid is not in `done` (already tagged by an earlier invocation)."""
    mask = pc.invert(pc.is_in(table.column("uuid"), value_set=pa.array(sorted(done))))
    return table.filter(mask)


def write_tagged_part(table: pa.Table, run_uri: str) -> dict:
    """Ray Data batch function: writes one `tagged/` part atomically; returns its counts."""
    if table.num_rows == 0:
        return {"rows": [0]}
    store = RunStore(run_uri)
    table = conform(table)
    indices = table.column("index").to_pylist()
    name = part_name(min(indices), table.column("uuid").to_pylist())
    store.write_part(store.kept_dir(STEP), name, table)
    return {"rows": [table.num_rows]}


@dataclass(frozen=True)
class TagStats:
    """What one invocation of the tag step did (a resumed run counts only its own rows)."""

    rows_todo: int
    rows_done_before: int
    rows_tagged: int  # rows of this invocation now in tagged/
    pools: tuple[str, ...]  # the model pools that ran
    wall_seconds: float
    passes: int = 0  # Ray Data passes: 1, plus one per sweep for rows a pass lost
    rows_missing: int = 0  # generated rows still untagged after the last pass


def _engine_settings(lm, seed: int):
    from ..engines import EngineSettings

    return EngineSettings(
        kind=lm.engine,
        model_path=resolve_model_path(lm.path),
        dtype=lm.dtype,
        max_model_len=lm.max_model_len,
        tensor_parallel_size=lm.tensor_parallel_size,
        trust_remote_code=lm.trust_remote_code,
        gpu_memory_utilization=lm.gpu_memory_utilization,
        kv_cache_gib=lm.kv_cache_gib,
        max_num_seqs=lm.max_num_seqs,
        seed=seed,
    )


@dataclass(frozen=True)
class ModelPool:
    """One enabled tagging model: its Ray Data actor class, arguments and pool size."""

    name: str
    actor: type
    kwargs: dict
    pool: PoolConfig
    concurrency: int  # calls in flight per actor: >1 keeps an engine fed while a batch parses


def model_pools(cfg: Config) -> list[ModelPool]:
    """The actor pools of the enabled tagging models, in pipeline order."""
    from .embed import Embedder
    from .judge import JudgeTagger
    from .reward import RewardTagger
    from .safety import SafetyTagger

    pools = []
    if cfg.reward.enabled:
        r = cfg.reward
        kwargs = {
            "scorer_kwargs": {
                "engine": r.engine,
                "path": resolve_model_path(r.path),
                "max_length": r.max_length,
                "micro_batch_size": r.micro_batch_size,
                "max_batch_tokens": r.max_batch_tokens,
                "dtype": r.dtype,
                "trust_remote_code": r.trust_remote_code,
                "kv_cache_gib": r.kv_cache_gib,
                "gpu_memory_utilization": r.gpu_memory_utilization,
            },
            "model_name": r.recorded_name,
            "min_margin": r.preference_min_margin,
        }
        pools.append(ModelPool("reward", RewardTagger, kwargs, r.pool, 1))
    if cfg.guard.enabled:
        g = cfg.guard
        kwargs = {
            "settings": _engine_settings(g, cfg.seed),
            "model_name": g.recorded_name,
            "use_chat_template": g.use_chat_template,
            "constrain": g.constrain_verdict,
        }
        pools.append(ModelPool("guard", SafetyTagger, kwargs, g.pool, 2))
    if cfg.judge.enabled:
        j = cfg.judge
        kwargs = {
            "settings": _engine_settings(j, cfg.seed),
            "model_name": j.recorded_name,
            "tasks": tuple(j.tasks),
            "max_tokens": j.max_tokens,
        }
        pools.append(ModelPool("judge", JudgeTagger, kwargs, j.pool, 2))
    if cfg.embedder.enabled:
        e = cfg.embedder
        kwargs = {
            "path": resolve_model_path(e.path),
            "model_name": e.name,
            "batch_size": e.encode_batch_size,
            "max_seq_length": e.max_seq_length,
        }
        pools.append(ModelPool("embedder", Embedder, kwargs, e.pool, 1))
    return pools


def _todo_files(store: RunStore, done: set[str]) -> tuple[list[str], int, int, frozenset]:
    """Generated parts with rows still to tag, how many rows, how many done, and the done
    uuids inside those parts (the only ones the pipeline must filter out)."""
    import pyarrow.parquet as pq

    files, todo, total, done_inside = [], 0, 0, set()
    for path in store.part_files(store.kept_dir(SOURCE_STEP)):
        uuids = pq.read_table(path, columns=["uuid"], filesystem=store.fs).column("uuid")
        uuids = uuids.to_pylist()
        total += len(uuids)
        remaining = [u for u in uuids if u not in done]
        if remaining:
            files.append(path)
            todo += len(remaining)
            done_inside.update(u for u in uuids if u in done)
    return files, todo, total - todo, frozenset(done_inside)


def run_step(cfg: Config, store: RunStore) -> TagStats:
    """Tag every generated row not already in `tagged/`.

    After each pass the generated rows are compared with `tagged/` again: rows a pass did not
    write (a node lost with its blocks) go through again, up to `tag.max_passes` passes; rows
    still untagged after that are counted in `rows_missing`.
    """
    started = time.perf_counter()
    files, todo, done_before, done_inside = _todo_files(store, store.done_uuids(STEP))
    pools = model_pools(cfg)
    passes = 0
    missing = todo
    while files and passes < cfg.tag.max_passes:
        passes += 1
        if passes > 1:
            log.warning(
                "tag: %d of %d rows were not written by pass %d; tagging them again, pass %d"
                " of at most %d",
                missing,
                todo,
                passes - 1,
                passes,
                cfg.tag.max_passes,
            )
        _run_pass(cfg, store, files, done_inside, pools, first=passes == 1)
        files, missing, _, done_inside = _todo_files(store, store.done_uuids(STEP))
    return TagStats(
        rows_todo=todo,
        rows_done_before=done_before,
        rows_tagged=todo - missing,
        pools=tuple(model.name for model in pools),
        wall_seconds=time.perf_counter() - started,
        passes=passes,
        rows_missing=missing,
    )


def _run_pass(
    cfg: Config,
    store: RunStore,
    files: list[str],
    done_inside: frozenset,
    pools: list[ModelPool],
    first: bool,
) -> None:
    """One Ray Data pass over the untagged rows of `files`. A later pass starts each pool at
    one actor (it may run on a cluster that lost a node)."""
    import ray.data

    from .text_tags import add_text_tags

    ray.data.DataContext.get_current().max_consecutive_actor_init_deaths = (
        cfg.cluster.actor_start_retries
    )
    task_args = {"num_cpus": cfg.tag.task_cpus}
    env = dict(cfg.cluster.actor_env)
    runtime_env = {"env_vars": env} if env else None
    ds = ray.data.read_parquet(files, filesystem=store.fs, **task_args)
    if done_inside:
        ds = ds.map_batches(
            drop_done, fn_kwargs={"done": done_inside}, batch_format="pyarrow", **task_args
        )
    ds = ds.map_batches(
        add_text_tags,
        fn_kwargs={"language": cfg.tag.language},
        batch_format="pyarrow",
        **task_args,
    )
    for model in pools:
        n = model.pool.num_actors
        size = {"size": n} if first else {"min_size": 1, "max_size": n}
        ds = ds.map_batches(
            model.actor,
            fn_constructor_kwargs=model.kwargs,
            batch_size=model.pool.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                **size,
                max_concurrent_calls_per_actor=model.concurrency,
                enable_true_multi_threading=model.concurrency > 1,
            ),
            num_cpus=model.pool.cpus_per_actor,
            num_gpus=model.pool.gpus_per_actor,
            runtime_env=runtime_env,
        )
    ds = ds.map_batches(
        write_tagged_part,
        fn_kwargs={"run_uri": store.run_uri},
        batch_size=cfg.tag.part_rows,
        batch_format="pyarrow",
        **task_args,
    )
    for _ in ds.iter_rows():
        pass
