"""Tag step: every generated row through the tagging models, streaming, into `tagged/`.

Reads `generated/` parts. Writes `tagged/` parts holding every generated column plus the
columns of `TAG_FIELDS` (the released Magpie datasets' names where they have them):

    text tags   language, instruction_length, response_length        (taggers/text_tags.py)
    reward      instruct_reward, reward_model, base_reward, reward_difference,
                rewards, chosen, rejected, preference_pair_reason     (taggers/reward.py)
    guard       llama_guard_2, safety, safety_categories, safety_model (taggers/safety.py)
    judge       difficulty, intent, knowledge, input_quality, quality_explanation,
                task_category, other_task_category, *_generator        (taggers/judge.py)
    embedder    embedding (L2-normalised list<float32>), embedding_model (taggers/embed.py)
    tag_errors  list of {tag, reason}: why a tag is null (malformed model output)

Each tagger declares its own columns; `taggers/registry.py` lists them. One Ray Data pipeline:
read -> text tags -> one actor pool per enabled model (sized by its `pool` config) -> a writer
task per `tag.part_rows` rows. Every pool works at once on different
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
import pyarrow.parquet as pq

from .. import console, metrics
from ..columns import conform
from ..config import Config
from ..progress import Progress
from ..storage import RunStore, part_name
from ..taggers.registry import FUNCTION_TAGGERS, TAG_FIELDS, enabled_model_taggers
from .actor_pools import engine_failures, map_with_actors, set_actor_start_retries

log = logging.getLogger(__name__)

STEP = "tag"
SOURCE_STEP = "generate"


def drop_done(table: pa.Table, done: frozenset) -> pa.Table:
    """Rows whose uuid is not in `done` (already tagged by an earlier invocation)."""
    mask = pc.invert(pc.is_in(table.column("uuid"), value_set=pa.array(sorted(done))))
    return table.filter(mask)


def write_tagged_part(table: pa.Table, run_uri: str) -> dict:
    """Ray Data batch function: writes one `tagged/` part atomically; returns its rows and when
    it was written."""
    if table.num_rows == 0:
        return {"rows": [0], "written_at": [time.time()]}
    store = RunStore(run_uri)
    table = conform(table, TAG_FIELDS)
    indices = table.column("index").to_pylist()
    name = part_name(min(indices), table.column("uuid").to_pylist())
    store.write_part(store.kept_dir(STEP), name, table)
    metrics.count("magpie_rows_tagged", table.num_rows, metrics.run_label(run_uri))
    return {"rows": [table.num_rows], "written_at": [time.time()]}


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
    rows_streamed: int = 0  # of rows_tagged: tagged as generate wrote them (tag.stream)


def _todo_files(store: RunStore, done: set[str]) -> tuple[list[str], int, int, frozenset]:
    """Generated parts with rows still to tag, how many rows, how many done, and the done
    uuids inside those parts (the only ones the pipeline must filter out)."""
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


def run_step(
    cfg: Config, store: RunStore, streamed_rows: int = 0, streamed_seconds: float = 0.0
) -> TagStats:
    """Tag every generated row not already in `tagged/`.

    After each pass the generated rows are compared with `tagged/` again: rows a pass did not
    write (a node lost with its blocks) go through again, up to `tag.max_passes` passes; rows
    still untagged after that are counted in `rows_missing`. `streamed_rows` were tagged in
    `streamed_seconds` by generation's own pass (`steps/stream.py`) and count as this
    invocation's; this call then tags what that pass left.
    """
    started = time.perf_counter() - streamed_seconds
    files, todo, done_before, done_inside = _todo_files(store, store.done_uuids(STEP))
    taggers = enabled_model_taggers(cfg)
    passes = 0
    missing = todo
    progress = Progress(STEP, todo, cfg.progress_every_s)
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
        _run_pass(cfg, store, files, done_inside, taggers, progress, first=passes == 1)
        files, missing, _, done_inside = _todo_files(store, store.done_uuids(STEP))
    progress.finish()
    return TagStats(
        rows_todo=todo + streamed_rows,
        rows_done_before=done_before - streamed_rows,
        rows_tagged=streamed_rows + todo - missing,
        pools=tuple(t.name for t in taggers),
        wall_seconds=time.perf_counter() - started,
        passes=passes + (1 if streamed_rows else 0),
        rows_missing=missing,
        rows_streamed=streamed_rows,
    )


def _run_pass(
    cfg: Config,
    store: RunStore,
    files: list[str],
    done_inside: frozenset,
    taggers: list,
    progress: Progress,
    first: bool,
) -> None:
    """One Ray Data pass over the untagged rows of `files` (pools: see `actor_pools`)."""
    import ray.data

    ds = ray.data.read_parquet(files, filesystem=store.fs, num_cpus=cfg.tag.task_cpus)
    if done_inside:
        ds = ds.map_batches(
            drop_done,
            fn_kwargs={"done": done_inside},
            batch_format="pyarrow",
            num_cpus=cfg.tag.task_cpus,
        )
    ds = tag_stages(ds, cfg, store, taggers, first)
    with engine_failures():
        for written in ds.iter_rows():
            progress.add(written["rows"])


def tag_stages(ds, cfg: Config, store: RunStore, taggers: list, first: bool):
    """`ds` (generated rows) -> model-free taggers -> one actor pool per model tagger ->
    `tagged/` parts; the result's rows are the writer's ({"rows": n, "written_at": epoch
    seconds} per part)."""
    set_actor_start_retries(cfg.cluster.actor_start_retries)
    task_args = {"num_cpus": cfg.tag.task_cpus}
    for tagger in FUNCTION_TAGGERS:
        ds = ds.map_batches(
            tagger.function,
            fn_kwargs=tagger.options(cfg) if tagger.options else {},
            batch_format="pyarrow",
            **task_args,
        )
    for tagger in taggers:
        config = getattr(cfg, tagger.name)
        ds = map_with_actors(
            ds,
            tagger.actor,
            {"config": config, "seed": cfg.seed},
            num_actors=config.pool.num_actors,
            max_actors=config.pool.max_actors,
            concurrency=tagger.concurrency,
            num_cpus=config.pool.cpus_per_actor,
            num_gpus=config.pool.gpus_per_actor,
            batch_size=config.pool.batch_size,
            first_pass=first,
            env=console.actor_env(cfg.quiet, cfg.cluster.actor_env),
        )
    return ds.map_batches(
        write_tagged_part,
        fn_kwargs={"run_uri": store.run_uri},
        batch_size=cfg.tag.part_rows,
        batch_format="pyarrow",
        **task_args,
    )
