"""The dataset card's Markdown body (`dataset_card.py` writes it under the front matter).

Sections: what the data is, its files and how to load each, how it was made (models with
their licenses, engine, sampling per stage, the pre-query template and any declared
deviation, the taggers), the row funnel, statistics of the kept rows, three samples, how to
reproduce the run, the license, the citation. Pure: it renders `CardFacts` and the config.
"""

from __future__ import annotations

import dataclasses
import re

from .export_formats import FORMATS
from .families.templates import load_family
from .kept_stats import PERCENTILES, SHARE_COLUMNS, Distribution
from .licenses import UNKNOWN
from .taggers.registry import enabled_model_taggers

MAGPIE_CITATION = """@article{xu2024magpie,
  title={Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with Nothing},
  author={Zhangchen Xu and Fengqing Jiang and Luyao Niu and Yuntian Deng and Radha Poovendran
    and Yejin Choi and Bill Yuchen Lin},
  year={2024},
  eprint={2406.08464},
  archivePrefix={arXiv},
  primaryClass={cs.CL}
}"""
SAMPLE_CHARS = 600


def cell(value) -> str:
    """A value as one Markdown table cell."""
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fenced(text: str) -> str:
    """`text` in a code fence longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _clip(text: str | None, chars: int = SAMPLE_CHARS) -> str:
    text = text or ""
    return text if len(text) <= chars else text[:chars] + " [...]"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _settings(obj) -> str:
    fields = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
    return ", ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, [], {}))


def files_section(facts) -> str:
    rows = []
    for name, fmt in FORMATS.items():
        if fmt.file not in facts.files:
            continue
        if not facts.files[fmt.file]:
            load = "empty, so no config"
        elif name in facts.configs:
            load = f'`load_dataset("<this folder or repo>", "{name}")`'
        else:
            builder = "json" if fmt.record is not None else "parquet"
            load = f'`load_dataset("{builder}", data_files="{fmt.file}")`'
        rows.append((fmt.file, name, facts.files[fmt.file], load))
    return "## Files\n\n" + table(("file", "format", "rows", "load with"), rows)


def models_section(cfg, facts) -> str:
    rows = [
        (m.role, m.model, m.path, m.revision or "", m.license_label(), m.source)
        for m in facts.models
    ]
    parts = [
        "## How it was made",
        "Each instruction was written by the model itself from the left side of its chat"
        " template up to the user turn (the pre-query template), then the same model"
        " answered it (Magpie, arXiv 2406.08464).",
        "### Models\n\n" + table(("role", "model", "path", "revision", "license", "from"), rows),
        f"Engine: `{cfg.engine.kind}`, dtype `{cfg.model.dtype}`, max_model_len"
        f" {cfg.model.max_model_len}, tensor parallel {cfg.model.tensor_parallel_size},"
        f" {cfg.cluster.num_actors} engine actor(s).",
    ]
    stages = [("instruction", cfg.generate.instruction), ("response", cfg.generate.response)]
    if cfg.generate.num_turns > 1:
        stages.append(("follow-up instruction", cfg.generate.follow_up))
    if cfg.generate.preference.num_responses:
        stages.append(("preference samples", cfg.generate.preference))
    rows = [(stage, _settings(sampling)) for stage, sampling in stages]
    parts.append("### Sampling\n\n" + table(("stage", "settings"), rows))
    parts.append(
        f"{cfg.generate.num_samples} rows requested, {cfg.generate.num_turns} turn(s) per"
        f" conversation, seed {cfg.seed}."
    )
    return "\n\n".join(parts)


def template_section(cfg) -> str:
    family = load_family(cfg.model.family, cfg.template_dirs)
    parts = [
        "### Pre-query template",
        f"Family `{family.name}`; `{{today}}` is the run's date. Every row records the exact"
        " text it was sampled from in `gen_input_configs.pre_query_template`.",
        fenced(family.pre_query_template),
    ]
    if cfg.generate.system_prompts:
        weights = ", ".join(f"{k}: {v}" for k, v in cfg.generate.system_prompts.items())
        parts.append(f"System prompts mixed by weight ({weights}), in the family's system turn.")
    deviation = family.pre_query_deviation
    if deviation is not None:
        parts.append(
            "Declared deviation: the chat template renders the following before the user's"
            f" words, and the pre-query above differs from it: {deviation.reason}"
        )
        parts.append(fenced(deviation.template_renders))
    return "\n\n".join(parts)


def taggers_section(cfg, facts) -> str:
    if facts.funnel.tagged is None:
        return ""
    rows = []
    for tagger in enabled_model_taggers(cfg):
        config = getattr(cfg, tagger.name)
        rows.append((tagger.name, config.name or config.path, ", ".join(tagger.columns)))
    return "### Tags\n\n" + table(("tagger", "model", "columns"), rows)


def funnel_section(facts) -> str:
    rows = [(stage, rows) for stage, rows in facts.funnel.stages()]
    return (
        "## Row funnel\n\nFrom the rows requested to the rows in each file; the run summary and"
        " report.html give the same figures.\n\n" + table(("stage", "rows"), rows)
    )


def compute_section(facts) -> str:
    if not facts.costs:
        return ""
    return (
        "### Compute\n\nWhat the run's row-wise steps held, over every invocation (the run"
        " summary and report.html give the same):\n\n" + table(("figure", "value"), facts.costs)
    )


TOPICS_SHOWN = 10


def diversity_section(facts) -> str:
    if not facts.diversity:
        return ""
    parts = [
        "### Diversity\n\nAll generated rows beside the kept ones: topic clusters (k-means over"
        " the instruction embeddings), distinct word uni- and bigrams of the instructions, and"
        " near-duplicates.\n\n" + table(("", "generated", "kept"), facts.diversity)
    ]
    if facts.topics:
        rows = [
            (t["topic"], t["rows"], t.get("top_task_category") or "", t.get("central_instruction"))
            for t in facts.topics[:TOPICS_SHOWN]
        ]
        header = ("topic", "rows", "top task category", "most central instruction")
        shown = min(len(facts.topics), TOPICS_SHOWN)
        parts.append(
            f"The largest {shown} of {len(facts.topics)} topic clusters (all generated rows):"
            "\n\n" + table(header, rows)
        )
    return "\n\n".join(parts)


def _distribution_rows(name: str, dist: Distribution | None) -> list[tuple]:
    if dist is None or dist.count == 0:
        return []
    points = [_number(dist.percentiles[p]) for p in PERCENTILES]
    return [(name, dist.count, _number(dist.mean), *points)]


def stats_section(facts) -> str:
    kept = facts.kept
    parts = [f"## The kept rows\n\n{kept.rows} rows (the filter's output, every export's source)."]
    for column in SHARE_COLUMNS:
        shares = kept.shares(column)
        if shares:
            rows = [(label, n, f"{100 * share:.1f}%") for label, n, share in shares]
            parts.append(f"### {column}\n\n" + table((column, "rows", "share"), rows))
    rows = [
        *_distribution_rows("instruction length (characters)", kept.lengths.get("instruction")),
        *_distribution_rows("response length (characters)", kept.lengths.get("response")),
        *_distribution_rows("instruct_reward", kept.reward),
    ]
    if rows:
        header = ("", "rows", "mean", *(f"p{p}" for p in PERCENTILES))
        parts.append("### Lengths and reward\n\n" + table(header, rows))
    return "\n\n".join(parts)


def samples_section(facts) -> str:
    if not facts.kept.samples:
        return ""
    parts = ["## Samples"]
    for i, row in enumerate(facts.kept.samples, 1):
        tags = ", ".join(
            f"{c}: {row[c]}" for c in (*SHARE_COLUMNS, "instruct_reward") if row.get(c) is not None
        )
        parts.append(f"### {i}. `{row.get('uuid')}`" + (f"\n\n{cell(tags)}" if tags else ""))
        parts.append("Instruction:\n\n" + fenced(_clip(row.get("instruction"))))
        parts.append("Response:\n\n" + fenced(_clip(row.get("response"))))
    return "\n\n".join(parts)


def reproduce_section(facts) -> str:
    return (
        "## Reproduce\n\nWith magpie-ray installed and the same model folders (`config.yaml`"
        " beside this card is the whole config, credentials redacted):\n\n"
        + fenced(facts.command)
        + "\n\nUnder `ray job submit` the same command is the entrypoint."
    )


def license_section(facts) -> str:
    lines = [
        "## License",
        "Generated data inherits the terms of the models that wrote it; the front matter"
        " carries their licenses forward:",
    ]
    for m in facts.models:
        where = {"model card": "its model card", "config": "the run's config"}.get(m.source)
        source = f" (from {where})" if where else ""
        lines.append(f"- {m.role}: `{m.model}`: {m.license_label()}{source}")
    if any(m.license == UNKNOWN and not m.name for m in facts.models):
        lines.append(
            "\nNo license is known for a model above (no README.md front matter in its folder"
            " and no `license` in its config), so this card says `other`: check the model's"
            " terms before you publish, and set `model.license` to carry them."
        )
    return "\n\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:])


def render_body(cfg, facts) -> str:
    intro = (
        f"# {facts.run_name}\n\nSynthetic instruction-response conversations made with"
        " magpie-ray, the Magpie way: an aligned"
        " chat model writes the instructions itself and answers them; reward model, safety"
        " guard, LLM judge and embeddings tag each row; near-duplicates are found globally;"
        " a filter recipe keeps the rows below."
    )
    sections = [
        intro,
        files_section(facts),
        models_section(cfg, facts),
        template_section(cfg),
        taggers_section(cfg, facts),
        compute_section(facts),
        funnel_section(facts),
        stats_section(facts),
        diversity_section(facts),
        samples_section(facts),
        reproduce_section(facts),
        license_section(facts),
        "## Citation\n\n" + fenced(MAGPIE_CITATION).replace("```text", "```bibtex", 1),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"
