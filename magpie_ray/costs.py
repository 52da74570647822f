"""What a run cost: per step, wall time, actors and GPUs held, engine busy share and output
tokens; over the run, GPU-hours, output tokens per second per GPU (per actor on CPU) and, with
`cluster.gpu_hour_usd`, the cost per million output tokens and per thousand kept rows.

Every invocation of a row-wise step writes what it did to `<run>/logs/steps/<time>-<step>.json`
(`record`), so a run resumed over several invocations adds up (`read_costs`); the run summary,
report.html and the dataset card read them back. GPU-hours are what the pools held: actors x
GPUs each x the step's wall time (start-up and stragglers included: what a rented cluster
bills). Tag pools count their configured actors (max_actors when autoscaling: an upper bound).
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import asdict, dataclass, field

import pyarrow.fs as pafs

from .storage import RunStore

STEPS_DIR = "logs/steps"
# The paper's anchor: Magpie-Air's 3M rows took 206 A100-hours (about 1.8k output tokens/s
# per A100), printed beside a run's own figures.
ANCHOR = "Magpie-Air: 206 A100-hours for 3M rows, about 1.8k output tokens/s per A100"


@dataclass(frozen=True)
class StepRecord:
    """One invocation of one step."""

    step: str
    wall_s: float
    actors: float  # actors held (per pool, summed)
    gpu_s: float  # GPU-seconds held: sum over pools of actors x GPUs each x wall_s
    output_tokens: int = 0
    busy_s: float = 0.0  # engine seconds advancing the model, summed over actors
    generation_s: float = 0.0  # first batch started -> last finished


@dataclass(frozen=True)
class StepCost:
    wall_s: float = 0.0
    actor_s: float = 0.0  # actors x wall_s
    gpu_s: float = 0.0
    output_tokens: int = 0
    busy_s: float = 0.0
    generation_actor_s: float = 0.0  # actors x generation_s: the busy share's denominator

    @property
    def busy_share(self) -> float | None:
        return self.busy_s / self.generation_actor_s if self.generation_actor_s > 0 else None


@dataclass(frozen=True)
class RunCost:
    steps: dict[str, StepCost] = field(default_factory=dict)

    @property
    def gpu_hours(self) -> float:
        return sum(s.gpu_s for s in self.steps.values()) / 3600

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.steps.values())

    def tokens_per_s(self) -> tuple[float, str] | None:
        """Generation's output tokens per second per GPU, or per actor on CPU."""
        gen = self.steps.get("generate")
        if gen is None or gen.wall_s <= 0:
            return None
        if gen.gpu_s > 0:
            return gen.output_tokens / gen.gpu_s, "per GPU"
        return gen.output_tokens / max(gen.actor_s, 1e-9), "per actor (CPU)"


def record(store: RunStore, rec: StepRecord) -> str:
    """Write one invocation's record under logs/steps/."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 10**9:09d}"
    name = posixpath.join(STEPS_DIR, f"{stamp}-{rec.step}.json")
    return store.write_text(name, json.dumps(asdict(rec), sort_keys=True) + "\n")


def read_costs(store: RunStore) -> RunCost:
    """Every recorded invocation, summed per step."""
    directory = posixpath.join(store.root, STEPS_DIR)
    if store.fs.get_file_info(directory).type == pafs.FileType.NotFound:
        return RunCost()
    entries = store.fs.get_file_info(pafs.FileSelector(directory))
    totals: dict[str, dict] = {}
    for entry in sorted(e.path for e in entries if e.path.endswith(".json")):
        with store.fs.open_input_stream(entry) as f:
            rec = StepRecord(**json.loads(f.read().decode()))
        t = totals.setdefault(rec.step, dict.fromkeys(StepCost.__dataclass_fields__, 0))
        t["wall_s"] += rec.wall_s
        t["actor_s"] += rec.actors * rec.wall_s
        t["gpu_s"] += rec.gpu_s
        t["output_tokens"] += rec.output_tokens
        t["busy_s"] += rec.busy_s
        t["generation_actor_s"] += rec.actors * rec.generation_s
    return RunCost({step: StepCost(**t) for step, t in totals.items()})


def cost_rows(cost: RunCost, gpu_hour_usd: float | None, kept: int | None) -> list[tuple]:
    """(figure, value) rows: what the summary, the report and the card show."""
    rows = []
    for step, s in cost.steps.items():
        busy = f", engines busy {100 * s.busy_share:.0f}%" if s.busy_share is not None else ""
        rows.append((f"{step} wall time", f"{s.wall_s:.1f} s{busy}"))
    rate = cost.tokens_per_s()
    if rate is not None:
        rows.append((f"output tokens/s {rate[1]}", f"{rate[0]:,.0f}"))
    rows.append(("output tokens", f"{cost.output_tokens:,}"))
    rows.append(("GPU-hours", f"{cost.gpu_hours:.3f}"))
    if gpu_hour_usd is not None:
        usd = cost.gpu_hours * gpu_hour_usd
        rows.append((f"cost at ${gpu_hour_usd:g}/GPU-hour", f"${usd:,.2f}"))
        if cost.output_tokens:
            rows.append(("per million output tokens", f"${usd / cost.output_tokens * 1e6:,.2f}"))
        if kept:
            rows.append(("per thousand kept rows", f"${usd / kept * 1000:,.2f}"))
    rows.append(("for scale", ANCHOR))
    return rows
