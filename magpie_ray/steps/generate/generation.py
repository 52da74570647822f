"""Generate step: every seed row through an engine actor pool on Ray Data, into `generated/`.

Reads seed rows (`seeds.py`, deterministic from the run name). Writes `generated/` parts (the
columns of `schema.GENERATED_SCHEMA`) and `dropped/generate/` parts (a reason per row, see
`rows.py`). Each engine actor loads its model once and serves every call of every row it gets
through one `RowPool`; it writes a part file per call itself (atomically), holding the rows
that finished for that call, so finished rows survive a crash of anything else. After each pass
the step compares the run's files with its rows and sends the missing ones (lost with a dead
actor or node) through again, up to `generate.max_passes` passes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from ... import console, metrics
from ...config import GenerateConfig
from ...engines.base import EngineSettings, SamplingSpec
from ...engines.lifecycle import engine_death_exits, engine_name, engine_settings
from ...engines.registry import ENGINES
from ...families.prepare import prepare_generator_family, prepare_responder_family
from ...progress import Progress
from ...storage import DROPPED_SCHEMA, RunStore, part_name
from ...urial import load_examples
from ..actor_pools import (
    engine_failures,
    engine_placement,
    map_with_actors,
    set_actor_start_retries,
)
from .base_answers import BaseAnswerer
from .chat_model import chat_model
from .row_pool import RowPool
from .rows import batch_result, generate_row, row_context
from .schema import GENERATED_SCHEMA, STEP, BatchResult
from .seeds import make_seed_rows

log = logging.getLogger(__name__)
# One start timeout for every engine of the generate step (generator, responder, base).
TIMEOUT_KEY = "engine.start_timeout_s"


@dataclass(frozen=True)
class GenerateSettings:
    """Everything an engine actor needs; small and picklable."""

    engine: EngineSettings
    family_name: str
    template_dirs: tuple[str, ...]
    model_name: str
    generate: GenerateConfig
    run_uri: str
    base_engine: EngineSettings | None = None  # the base model, when generate.base.path is set
    # The responder, when generate.responder.path is set: its engine, family and recorded name.
    responder_engine: EngineSettings | None = None
    responder_family: str | None = None
    responder_name: str = ""


class GenerateActor:
    """Ray Data actor: one engine, loaded once; `__call__` takes a batch of seed rows.

    It returns the call's counters; with a `sink` (generation streaming into tagging, see
    `steps/stream.py`) it sends the counters there and returns the rows it kept instead, for
    the tag pools downstream."""

    def __init__(self, settings: GenerateSettings, sink=None):
        from ...engines import load_engine
        from ...engines.tokens import load_tokenizer

        started = time.perf_counter()
        s, cfg = settings, settings.generate
        # Templates are checked against the tokenizers before the (slow) model loads.
        tokenizer = load_tokenizer(s.engine.model_path, s.engine.trust_remote_code)
        family, checked = prepare_generator_family(s.family_name, s.template_dirs, cfg, tokenizer)
        responder_family = None
        if s.responder_engine is not None:
            responder_tokenizer = load_tokenizer(
                s.responder_engine.model_path, s.responder_engine.trust_remote_code
            )
            responder_family = prepare_responder_family(
                s.responder_family, s.template_dirs, cfg.response.thinking, responder_tokenizer
            )
        self.settings = settings
        self.engine = load_engine(s.engine, "engine")
        self.base = _load_base_answerer(settings) if s.base_engine else None
        generator = chat_model(
            self.engine,
            family,
            s.model_name,
            s.engine.kind,
            s.engine.max_model_len,
            thinking=cfg.response.thinking if responder_family is None else None,
            deviation=checked.deviation,
            pre_query=str(cfg.instruction.pre_query),
        )
        responder = None
        if responder_family is not None:
            responder = chat_model(
                load_engine(s.responder_engine, "generate.responder", TIMEOUT_KEY),
                responder_family,
                s.responder_name,
                s.responder_engine.kind,
                s.responder_engine.max_model_len,
                thinking=cfg.response.thinking,
            )
        self.responder_engine = responder.engine if responder else None
        # Every engine this actor holds, by the name a death is logged with.
        self.engines = {engine_name("engine", s.engine): self.engine}
        if self.base:
            self.engines[engine_name("generate.base", s.base_engine)] = self.base.engine
        if responder:
            self.engines[engine_name("generate.responder", s.responder_engine)] = responder.engine
        self.store = RunStore(settings.run_uri)
        self.ctx = row_context(generator, cfg, self.base, responder)
        self.pool = RowPool()
        # Rows already in the run's files when this actor started: a restarted actor's retried
        # calls are checked against them (see __call__). A first start needs no scan (its calls
        # hold rows nobody has written), which spares every actor reading the uuids of every
        # part of a large run.
        self.written_before_start = self.store.done_uuids(STEP) if _restarted_actor() else set()
        self.load_seconds = time.perf_counter() - started
        self._reported_load = False
        self._busy_counted = 0.0  # engine seconds already added to the busy-time metric
        self.actor_key = f"{socket.gethostname()}:{os.getpid()}"
        self.sink = sink

    def __call__(self, batch: pa.Table) -> dict | pa.Table:
        stats, kept = self._generate(batch)
        if self.sink is None:
            return stats
        import ray

        # Acknowledged before the rows go on: once the pass is over, every call's counters are in.
        ray.get(self.sink.add.remote(stats))
        return kept

    def _generate(self, batch: pa.Table) -> tuple[dict, pa.Table]:
        """Generate the batch's rows, write their part files; (counters, kept rows)."""
        rows = batch.to_pylist()
        started = time.time()
        # The rows that come back are the first len(rows) to finish in this actor, not
        # necessarily these rows (see RowPool); the part file holds the rows that came back.
        # A call retried on a restarted actor may hold rows that another call wrote before the
        # crash (they finished in the pool and went back with that call): never write them twice.
        todo = [row for row in rows if row["uuid"] not in self.written_before_start]
        # An engine that died takes this actor with it (Ray retries this call on a fresh one).
        with engine_death_exits(self.engines):
            outcomes = self.pool.run([generate_row(self.ctx, row) for row in todo])
        result = batch_result(outcomes)
        done = [o.kept or o.dropped for o in outcomes]
        stats = self._stats(len(rows) - len(todo), result, started)
        kept = pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)
        if not done:
            return stats, kept
        first = min(r["index"] for r in done)
        name = part_name(first, [r["uuid"] for r in done])
        # Each uuid lands in exactly one of the two files, so a crash between the writes only
        # leaves the second file's rows undone; a resume regenerates them, never duplicates.
        if result.dropped:
            table = pa.Table.from_pylist(result.dropped, schema=DROPPED_SCHEMA)
            self.store.write_part(self.store.dropped_dir(STEP), name, table)
        if result.kept:
            self.store.write_part(self.store.kept_dir(STEP), name, kept)
        stats["finished_at"] = [time.time()]
        return stats, kept

    def _stats(self, skipped: int, result: BatchResult, started: float) -> dict:
        load_seconds = 0.0 if self._reported_load else self.load_seconds
        self._reported_load = True
        engines = [self.engine] + ([self.responder_engine] if self.responder_engine else [])
        busy = sum(e.busy_seconds for e in engines)
        self._count_metrics(result, busy)
        return {
            "actor": [self.actor_key],
            # cumulative over the actor; with a responder, both engines' time and steps
            "engine_busy_seconds": [busy],
            "engine_steps": [sum(e.steps for e in engines)],
            "rows": [len(result.kept) + len(result.dropped)],
            "skipped": [skipped],
            "kept": [len(result.kept)],
            "output_tokens": [result.output_tokens],
            "started_at": [started],
            "finished_at": [time.time()],
            "load_seconds": [load_seconds],
        }

    def _count_metrics(self, result: BatchResult, busy_seconds: float) -> None:
        """The batch's rows, drops by reason, output tokens and engine time as Ray metrics."""
        run = metrics.run_label(self.settings.run_uri)
        metrics.count("magpie_rows_generated", len(result.kept), run)
        for reason, n in Counter(row["reason"] for row in result.dropped).items():
            metrics.count("magpie_rows_dropped", n, run, reason=reason)
        metrics.count("magpie_output_tokens", result.output_tokens, run)
        metrics.count("magpie_engine_busy_seconds", busy_seconds - self._busy_counted, run)
        self._busy_counted = busy_seconds


def _restarted_actor() -> bool:
    """Whether this is a Ray actor that has been restarted; True where it cannot be told (outside
    a Ray actor, or the state API failed), since then the store scan is the safe side."""
    try:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
            return True
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - the state API is best effort; scanning is always correct
        return True


@dataclass(frozen=True)
class StepStats:
    """What one invocation of the step did (a resumed run counts only its own work)."""

    rows_todo: int
    rows_done_before: int
    rows_processed: int  # rows of this invocation now in the run's files (kept or dropped)
    rows_kept: int
    output_tokens: int
    wall_seconds: float  # the whole step, actor start-up included
    generation_seconds: float  # first batch started -> last batch finished, on any actor
    engine_load_seconds: float  # the slowest actor's model load
    # Seconds the engines spent advancing their models, summed over actors; divided by
    # actors x generation_seconds it says how much of the time the engines had work.
    engine_busy_seconds: float = 0.0
    max_num_seqs: int | None = None  # vLLM engines' limit of sequences per step (None: HF)
    # Rows of a retried call (after an actor crash) that were already written: not redone.
    rows_skipped_on_retry: int = 0
    engine_steps: int = 0
    actors: int = 0
    passes: int = 0  # Ray Data passes: 1, plus one per sweep for rows lost with an actor
    rows_missing: int = 0  # rows in no file after the last pass: the run is incomplete

    @property
    def engine_busy_fraction(self) -> float | None:
        if not self.actors or self.generation_seconds <= 0:
            return None
        return min(1.0, self.engine_busy_seconds / (self.actors * self.generation_seconds))


def _load_base_answerer(settings: GenerateSettings):
    from ...engines import load_engine

    base = settings.generate.base
    spec = SamplingSpec(temperature=base.temperature, top_p=base.top_p, max_tokens=base.max_tokens)
    return BaseAnswerer(
        load_engine(settings.base_engine, "generate.base", TIMEOUT_KEY),
        base.name or base.path,
        load_examples(base.examples_file),
        spec,
        base.max_model_len,
    )


def settings_from(cfg) -> GenerateSettings:
    m, e, base, responder = cfg.model, cfg.engine, cfg.generate.base, cfg.generate.responder
    scheduling = dict(
        max_num_seqs=e.max_num_seqs,
        enforce_eager=e.enforce_eager,
        hf_batch_size=e.hf_batch_size,
        start_timeout_s=e.start_timeout_s,
    )
    return GenerateSettings(
        # The base model brings its own memory budget (it shares the actor's GPU).
        base_engine=(
            engine_settings(base.kind, base, base, cfg.seed, **scheduling)
            if base.path is not None
            else None
        ),
        engine=engine_settings(e.kind, m, e, cfg.seed, **scheduling),
        responder_engine=(
            engine_settings(responder.kind, responder, responder, cfg.seed, **scheduling)
            if responder.path is not None
            else None
        ),
        responder_family=responder.family if responder.path is not None else None,
        responder_name=responder.name or (responder.path or ""),
        family_name=m.family,
        template_dirs=tuple(cfg.template_dirs),
        model_name=m.name,
        generate=cfg.generate,
        run_uri=cfg.run_uri,
    )


def run_step(cfg, store: RunStore, seeds: list[dict] | None = None, first_pass=None) -> StepStats:
    """Generate every seed row not already in `generated/` or `dropped/generate/`.

    After each pass the step compares the run's files with the rows it was given: a row that is
    in neither (its engine actor or node died while it was in flight, after the call that
    brought it had returned) goes through again, up to `generate.max_passes` passes in all.
    Rows still missing after that are counted in `rows_missing`; the pipeline then stops with
    a non-zero exit. `seeds` replaces the rows made from the config (benchmarks pass
    synthetic workloads); `first_pass` replaces the first pass (`_run_pass`'s signature: the
    pass that streams into tagging, `steps/stream.py`).
    """
    gen = cfg.generate
    if seeds is None:
        seeds = make_seed_rows(cfg.run_name, cfg.seed, gen.num_samples, gen)
    done = store.done_uuids(STEP)
    todo = [row for row in seeds if row["uuid"] not in done]
    started = time.perf_counter()
    tally = _Tally()
    progress = Progress(STEP, len(todo), cfg.progress_every_s, tokens=True)
    pending, passes = todo, 0
    while pending and passes < gen.max_passes:
        passes += 1
        if passes > 1:
            log.warning(
                "generate: %d of %d rows were not written by pass %d (an engine actor or node"
                " died while they were in flight); generating them again, pass %d of at most %d",
                len(pending),
                len(todo),
                passes - 1,
                passes,
                gen.max_passes,
            )
        run_pass = first_pass if first_pass is not None and passes == 1 else _run_pass
        run_pass(cfg, pending, tally, progress, first=passes == 1)
        done = store.done_uuids(STEP)
        pending = [row for row in pending if row["uuid"] not in done]
    progress.finish()
    return StepStats(
        rows_todo=len(todo),
        rows_done_before=len(seeds) - len(todo),
        rows_processed=len(todo) - len(pending),
        rows_skipped_on_retry=tally.skipped,
        rows_kept=tally.kept,
        output_tokens=tally.tokens,
        wall_seconds=time.perf_counter() - started,
        generation_seconds=max(0.0, tally.last_finish - tally.first_start),
        engine_load_seconds=tally.load_seconds,
        engine_busy_seconds=sum(tally.busy.values()),
        engine_steps=sum(tally.steps.values()),
        max_num_seqs=cfg.engine.max_num_seqs if ENGINES[str(cfg.engine.kind)].schedules else None,
        actors=len(tally.busy),
        passes=passes,
        rows_missing=len(pending),
    )


@dataclass
class _Tally:
    """The counters of every actor call of an invocation, over all its passes."""

    skipped: int = 0
    kept: int = 0
    tokens: int = 0
    load_seconds: float = 0.0
    first_start: float = float("inf")
    last_finish: float = 0.0
    busy: dict = dataclasses.field(default_factory=dict)  # actor -> cumulative busy seconds
    steps: dict = dataclasses.field(default_factory=dict)  # actor -> cumulative engine steps

    def add(self, stats: dict) -> None:
        self.skipped += stats["skipped"]
        self.kept += stats["kept"]
        self.tokens += stats["output_tokens"]
        self.load_seconds = max(self.load_seconds, stats["load_seconds"])
        self.first_start = min(self.first_start, stats["started_at"])
        self.last_finish = max(self.last_finish, stats["finished_at"])
        actor = stats["actor"]
        self.busy[actor] = max(self.busy.get(actor, 0.0), stats["engine_busy_seconds"])
        self.steps[actor] = max(self.steps.get(actor, 0), stats["engine_steps"])


def _run_pass(cfg, rows: list[dict], tally: _Tally, progress: Progress, first: bool) -> None:
    """One Ray Data pass of `rows` through an engine actor pool (see `actor_pools`)."""
    ds = generate_stage(cfg, rows, first)
    with engine_failures():
        for stats in ds.iter_rows():
            tally.add(stats)
            progress.add(stats["rows"], stats["output_tokens"])


def generate_stage(cfg, rows: list[dict], first: bool, sink=None):
    """A Ray Data dataset of `rows` through the engine actor pool: the calls' counters, or with
    a `sink` (which then gets the counters) the rows they kept."""
    import ray.data

    gen, cl = cfg.generate, cfg.cluster
    blocks = min(len(rows), max(1, -(-len(rows) // gen.batch_size)))
    set_actor_start_retries(cl.actor_start_retries)
    return map_with_actors(
        ray.data.from_items(rows, override_num_blocks=blocks),
        GenerateActor,
        {"settings": settings_from(cfg), "sink": sink},
        # One block (<= batch_size rows) per actor call. With batch_size set, Ray Data
        # bundles blocks up to batch_size rows and runs the bundle's batches one after
        # another in one call, so a batch waited for the previous one's longest row.
        batch_size=None,
        num_actors=cl.num_actors,
        max_actors=cl.max_actors,
        concurrency=cl.batches_in_flight,
        num_cpus=cl.cpus_per_actor,
        num_gpus=cl.gpus_per_actor,
        first_pass=first,
        resources=cl.actor_resources,
        placement=(
            engine_placement(int(cl.gpus_per_actor), cl.cpus_per_actor, cl.actor_resources)
            if cfg.model.pipeline_parallel_size > 1
            else None
        ),
        env=console.actor_env(cfg.quiet, cl.actor_env),
    )
