"""Model-family pre-query templates: load them from YAML and render them (pure).

Magpie samples instructions by handing an aligned chat model only the start of a user turn (the
"pre-query"), e.g. `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n` for Llama-3.
One YAML file per model family under `magpie_ray/families/shipped/` holds that text, the strings and
token ids that end the sampled instruction, optional system-prompt variants and the text that
starts a follow-up user turn. Adding a family needs only a YAML file (see `llama3.yaml`).

Contract:
- Pre-query texts are exact model input, BOS text included where the chat template renders one.
  Engines must encode them with `add_special_tokens=False`; otherwise the tokenizer prepends a
  second BOS (the reference implementation's double-BOS bug).
- `follow_up_template` is appended to a conversation rendered by the chat template that ends with
  an assistant message, i.e. after the assistant's end-of-turn text (`<|eot_id|>` for Llama-3,
  `<|im_end|>\\n` for ChatML); it opens the next user turn.
  `render_follow_up_prompt` renders that text with the chat template itself (history, then
  everything before the next user's words), so multi-turn prompts are exactly what the model's
  template produces; the YAML text documents it and validation checks that both agree.
- Optional `banned_first_token_prefixes`, `sanitize` and `sanitizer` ("ours" | "reference") are
  the family's defaults for the instruction-sampling options of the same names (see
  config.InstructionSampling).
- Optional `chat_template` (Jinja) is used only by a tokenizer that ships none (Vicuna's);
  `fit_chat_template` installs it before validation, so it is checked like a tokenizer's own.
- `checks.validate_against_tokenizer` runs before any model loads and raises
  `TemplateError` (or its subclass `TemplateMismatchError`) with the fix in the message. A family
  text that differs from the chat template's rendering only in ways the tokenizer erases (same
  token ids) is accepted, because the model sees the same input; so is a deliberate difference
  the family declares (`pre_query_deviation`: what the template renders, and why we differ).
- `{today}` in a pre-query, system-prompt or deviation text is the run-time date (templates
  such as Llama-3.2/3.3's date their system turn with the day they render), formatted with the
  family's `date_format`; rows record the exact text they were sampled with.
- Optional `thinking` describes a reasoning model's modes (`generate.response.thinking`): the
  chat-template arguments of each mode (Qwen3: `enable_thinking`), the markers around the
  reasoning and whether the generation prompt already opens it (DeepSeek-R1). `renderer:
  harmony` (gpt-oss) renders prompts and parses answers with `openai-harmony` instead of a chat
  template (see `harmony.py`).
- Everything here is a pure function of YAML text and a tokenizer object; nothing loads a model.
  A tokenizer is anything shaped like a Hugging Face `PreTrainedTokenizerBase`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

BUILTIN_DIR = Path(__file__).with_name("shipped")
SYSTEM_PROMPT_PLACEHOLDER = "{system_prompt}"

# No surrounding whitespace: some chat templates `| trim` message content.
USER_SENTINEL = "MAGPIEUSERSENTINEL"
ASSISTANT_SENTINEL = "MAGPIEASSISTANTSENTINEL"
SYSTEM_SENTINEL = "MAGPIESYSTEMSENTINEL"

_REQUIRED_KEYS = ("name", "pre_query_template", "stop_strings", "stop_token_ids")
_OPTIONAL_KEYS = (
    "models",
    "system_prompt_template",
    "system_prompts",
    "follow_up_template",
    "banned_first_token_prefixes",
    "sanitize",
    "sanitizer",
    "chat_template",
    "pre_query_deviation",
    "thinking",
    "date_format",
    "renderer",
    "response_stop_strings",
)
TODAY_PLACEHOLDER = "{today}"
RENDERERS = ("chat_template", "harmony")
_FAMILY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FIX = "Fix: edit the family's YAML file or pick another `model.family`."
DEFAULT_SYSTEM_PROMPT = "default"  # the domain mixture's key for the family's own pre-query


class TemplateError(ValueError):
    """A family definition is invalid or does not fit the tokenizer it is used with."""


class UnknownFamilyError(TemplateError):
    """No YAML file defines the requested family."""


class TemplateMismatchError(TemplateError):
    """A family's text differs from what the tokenizer's chat template renders."""


@dataclass(frozen=True)
class Deviation:
    """A deliberate difference from the chat template: what the template renders before the
    user's words (placeholders allowed), and why the family's pre-query differs from it."""

    template_renders: str
    reason: str


@dataclass(frozen=True)
class Thinking:
    """A reasoning model's modes and how its reasoning is marked in the response text."""

    modes: tuple[str, ...]  # values `generate.response.thinking` may take for this family
    default: str
    start: str = "<think>"
    end: str = "</think>"
    # mode -> extra arguments of the chat template (e.g. {"enable_thinking": false})
    template_kwargs: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # The generation prompt itself opens the reasoning (DeepSeek-R1: "<think>\n"), so the
    # response text starts inside it.
    opened_by_prompt: bool = False

    def kwargs(self, mode: str) -> dict[str, Any]:
        return dict(self.template_kwargs.get(mode, {}))


@dataclass(frozen=True)
class Family:
    """One model family's Magpie templates; see the module docstring for what each text means."""

    name: str
    pre_query_template: str
    stop_strings: tuple[str, ...]
    stop_token_ids: tuple[int, ...]
    system_prompt_template: str | None = None
    # Read-only view; left out of the hash so that a Family stays hashable.
    system_prompts: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    follow_up_template: str | None = None
    models: tuple[str, ...] = ()
    # Defaults of the instruction-sampling options of the same names (config may override them):
    # vocabulary entries starting with these texts may not open an instruction, and whether the
    # instruction sanitizer runs.
    banned_first_token_prefixes: tuple[str, ...] = ()
    sanitize: bool = False
    sanitizer: str = "ours"  # "reference": the reference's truncation rule (its scripts' own)
    # Jinja chat template for models whose tokenizer ships none (Vicuna); a tokenizer's own wins.
    chat_template: str | None = None
    pre_query_deviation: Deviation | None = None
    thinking: Thinking | None = None
    date_format: str = "%d %b %Y"  # how `{today}` is written (Llama-3.2/3.3's "29 Nov 2026")
    renderer: str = "chat_template"  # or "harmony" (gpt-oss)
    # What ends a response when it differs from what ends an instruction; None = stop_strings.
    response_stop_strings: tuple[str, ...] | None = None

    @property
    def response_stops(self) -> tuple[str, ...]:
        return (
            self.stop_strings if self.response_stop_strings is None else self.response_stop_strings
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        object.__setattr__(
            self, "banned_first_token_prefixes", tuple(self.banned_first_token_prefixes)
        )
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "models", tuple(self.models))
        if self.response_stop_strings is not None:
            object.__setattr__(self, "response_stop_strings", tuple(self.response_stop_strings))
        object.__setattr__(self, "system_prompts", MappingProxyType(dict(self.system_prompts)))
        if self.system_prompt_template is None:
            if self.system_prompts:
                raise TemplateError(
                    f"family {self.name!r}: system_prompts {sorted(self.system_prompts)} need a"
                    " system_prompt_template, which is null"
                )
        elif self.system_prompt_template.count(SYSTEM_PROMPT_PLACEHOLDER) != 1:
            raise TemplateError(
                f"family {self.name!r}: system_prompt_template must contain"
                f" {SYSTEM_PROMPT_PLACEHOLDER!r} exactly once, got"
                f" {self.system_prompt_template!r}"
            )


def _search_dirs(extra_dirs: Sequence[str | Path]) -> tuple[Path, ...]:
    dirs = tuple(Path(d).expanduser() for d in extra_dirs)
    for d in dirs:
        if not d.is_dir():
            raise TemplateError(f"template directory {str(d)!r} does not exist")
    return (*dirs, BUILTIN_DIR)


def list_families(extra_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Sorted names of the shipped families (plus those in `extra_dirs`)."""
    return sorted({p.stem for d in _search_dirs(extra_dirs) for p in d.glob("*.yaml")})


def load_family(name: str, extra_dirs: Sequence[str | Path] = ()) -> Family:
    """The family `name`, from `<dir>/<name>.yaml`; `extra_dirs` are searched before the shipped
    directory, so a user's file overrides a shipped one of the same name."""
    return _load_family(name, tuple(str(d) for d in extra_dirs))


@functools.cache
def _load_family(name: str, extra_dirs: tuple[str, ...]) -> Family:
    dirs = _search_dirs(extra_dirs)
    if _FAMILY_NAME.fullmatch(name):
        for d in dirs:
            path = d / f"{name}.yaml"
            if path.is_file():
                return _parse_family_file(path)
    raise UnknownFamilyError(
        f"unknown model family {name!r}; valid families: {', '.join(list_families(extra_dirs))}"
    )


def _parse_family_file(path: Path) -> Family:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TemplateError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise TemplateError(
            f"{path}: unknown key(s) {unknown}; allowed keys:"
            f" {list(_REQUIRED_KEYS + _OPTIONAL_KEYS)}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise TemplateError(f"{path}: missing required key(s) {missing}")

    def check(key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise TemplateError(f"{path}: {key} must be {expected}, got {data[key]!r}")

    def is_str_list(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) and v for v in value)

    check("name", isinstance(data["name"], str), "a string")
    if data["name"] != path.stem:
        raise TemplateError(f"{path}: name {data['name']!r} must equal the file stem {path.stem!r}")
    check("pre_query_template", isinstance(data["pre_query_template"], str), "a string")
    check("pre_query_template", bool(data["pre_query_template"]), "non-empty")
    check(
        "stop_strings",
        is_str_list(data["stop_strings"]) and bool(data["stop_strings"]),
        "a non-empty list of non-empty strings",
    )
    ids = data["stop_token_ids"]
    # bool is an int subclass; `true` in a YAML id list is a typo, not token 1.
    check(
        "stop_token_ids",
        isinstance(ids, list) and all(type(i) is int and i >= 0 for i in ids),
        "a list of token ids (non-negative integers)",
    )
    data.setdefault("models", [])
    check("models", is_str_list(data["models"]), "a list of model names")
    data.setdefault("banned_first_token_prefixes", [])
    check(
        "banned_first_token_prefixes",
        is_str_list(data["banned_first_token_prefixes"]),
        "a list of non-empty strings",
    )
    data.setdefault("sanitize", False)
    check("sanitize", isinstance(data["sanitize"], bool), "true or false")
    data.setdefault("sanitizer", "ours")
    check("sanitizer", data["sanitizer"] in ("ours", "reference"), "ours or reference")
    for key in ("system_prompt_template", "follow_up_template", "chat_template"):
        data.setdefault(key, None)
        check(key, data[key] is None or (isinstance(data[key], str) and data[key]), "text or null")
    data.setdefault("response_stop_strings", None)
    check(
        "response_stop_strings",
        data["response_stop_strings"] is None or is_str_list(data["response_stop_strings"]),
        "a list of non-empty strings or null",
    )
    data.setdefault("date_format", "%d %b %Y")
    check("date_format", isinstance(data["date_format"], str), "a strftime format")
    data.setdefault("renderer", "chat_template")
    check("renderer", data["renderer"] in RENDERERS, f"one of {list(RENDERERS)}")
    data["pre_query_deviation"] = _parse_deviation(path, data.get("pre_query_deviation"))
    data["thinking"] = _parse_thinking(path, data.get("thinking"))
    data.setdefault("system_prompts", {})
    prompts = data["system_prompts"]
    check(
        "system_prompts",
        isinstance(prompts, dict)
        and all(isinstance(k, str) and isinstance(v, str) and v for k, v in prompts.items()),
        "a mapping of name -> non-empty prompt text",
    )
    try:
        return Family(**data)
    except TemplateError as err:
        raise TemplateError(f"{path}: {err}") from err


def _parse_deviation(path: Path, data: Any) -> Deviation | None:
    if data is None:
        return None
    ok = (
        isinstance(data, dict)
        and set(data) == {"template_renders", "reason"}
        and all(isinstance(v, str) and v.strip() for v in data.values())
    )
    if not ok:
        raise TemplateError(
            f"{path}: pre_query_deviation must be {{template_renders: <what the chat template"
            " renders before the user's words>, reason: <why the pre-query differs>}, got"
            f" {data!r}"
        )
    return Deviation(**data)


def _parse_thinking(path: Path, data: Any) -> Thinking | None:
    if data is None:
        return None
    allowed = {"modes", "default", "start", "end", "template_kwargs", "opened_by_prompt"}
    ok = (
        isinstance(data, dict)
        and set(data) <= allowed
        and isinstance(data.get("modes"), list)
        and data["modes"]
        and all(isinstance(m, str) for m in data["modes"])
        and data.get("default") in data["modes"]
        and isinstance(data.get("template_kwargs", {}), dict)
        and set(data.get("template_kwargs", {})) <= set(data["modes"])
        and all(isinstance(v, dict) for v in data.get("template_kwargs", {}).values())
    )
    if not ok:
        raise TemplateError(
            f"{path}: thinking must be {{modes: [..], default: <one of modes>, start, end,"
            f" template_kwargs: {{<mode>: {{..}}}}, opened_by_prompt}} (quote on/off), got {data!r}"
        )
    kwargs = MappingProxyType(
        {k: MappingProxyType(dict(v)) for k, v in data.get("template_kwargs", {}).items()}
    )
    return Thinking(
        modes=tuple(data["modes"]),
        default=data["default"],
        start=data.get("start", "<think>"),
        end=data.get("end", "</think>"),
        template_kwargs=kwargs,
        opened_by_prompt=bool(data.get("opened_by_prompt", False)),
    )


def fill_today(family: Family, text: str, today: datetime.date | None = None) -> str:
    """`text` with `{today}` written as the family's template writes the date."""
    if TODAY_PLACEHOLDER not in text:
        return text
    return text.replace(
        TODAY_PLACEHOLDER, (today or datetime.date.today()).strftime(family.date_format)
    )


def render_pre_query(
    family: Family, system_prompt_key: str | None = None, today: datetime.date | None = None
) -> str:
    """The pre-query text: the family default, or its system turn filled with a named prompt;
    `{today}` is the run's date (`today`, default the current date)."""
    if system_prompt_key is None:
        return fill_today(family, family.pre_query_template, today)
    if family.system_prompt_template is None:
        raise TemplateError(
            f"family {family.name!r}: its chat template has no system turn, so system prompt"
            f" {system_prompt_key!r} cannot be used; drop it from generate.system_prompts (only"
            " 'default' works here) or pick a family with a system turn"
        )
    if system_prompt_key not in family.system_prompts:
        raise TemplateError(
            f"family {family.name!r} has no system prompt {system_prompt_key!r}; its system"
            f" prompts: {sorted(family.system_prompts)}"
        )
    # str.replace, not format: prompts and templates may contain literal braces; the date is
    # filled in the template first, so a prompt's own text is never touched.
    return fill_today(family, family.system_prompt_template, today).replace(
        SYSTEM_PROMPT_PLACEHOLDER, family.system_prompts[system_prompt_key]
    )


def with_system_prompts(family: Family, extra: Mapping[str, str]) -> Family:
    """`family` with user-defined named system prompts added (a user's name wins over the
    family's); validating the result checks them against the tokenizer like shipped ones."""
    if not extra:
        return family
    if family.system_prompt_template is None:
        raise TemplateError(
            f"family {family.name!r}: its chat template has no system turn, so custom system"
            f" prompts {sorted(extra)} cannot be used; leave generate.custom_system_prompts empty"
        )
    empty = sorted(k for k, v in extra.items() if not v)
    if empty:
        raise TemplateError(f"custom system prompts {empty} are empty")
    return dataclasses.replace(family, system_prompts={**family.system_prompts, **extra})


def render_follow_up_prompt(
    tokenizer: Any, history: Sequence[Mapping[str, str]], system_prompt: str | None
) -> str:
    """The text that makes a chat model write the next user turn of `history`.

    `history` alternates user and assistant messages and ends with an assistant one; the chat
    template renders it (under `system_prompt` when given) followed by the opening of a new user
    turn, which is what `follow_up_template` describes and what `validate_against_tokenizer`
    checks against it.
    """
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [dict(m) for m in history]
    messages.append({"role": "user", "content": USER_SENTINEL})
    return render_prefix(tokenizer, messages)


def fit_chat_template(family: Family, tokenizer: Any) -> None:
    """Give `tokenizer` the family's `chat_template` when it has none of its own.

    Responses (and follow-up turns) are rendered by the chat template, so a generator needs one:
    raises `TemplateError` when neither the tokenizer nor the family has one.
    """
    if getattr(tokenizer, "chat_template", None):
        return
    if family.chat_template is None:
        raise TemplateError(
            f"family {family.name!r}: the model's tokenizer has no chat template and the family"
            " gives none, so responses cannot be rendered. Fix: add `chat_template:` (Jinja, as"
            " in a tokenizer_config.json) to the family's YAML, or use a tokenizer that has one."
        )
    tokenizer.chat_template = family.chat_template


def stop_token_ids_for(
    family: Family, tokenizer: Any, strings: Sequence[str] | None = None
) -> list[int]:
    """The family's stop ids plus the ids of its stop strings (or `strings`, e.g. its response
    stops) that are special tokens here. With `strings`, the family's listed ids count only
    where they stand for one of those strings."""
    if strings is None:
        strings, ids = family.stop_strings, list(family.stop_token_ids)
    else:
        ids = []
    for text in strings:
        token_id = special_token_id(tokenizer, text)
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    return ids


def render_prefix(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat template's text before the last message's content (a sentinel)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    sentinel = messages[-1]["content"]
    if sentinel not in text:
        raise TemplateError(
            f"the chat template dropped the message content {sentinel!r}; rendered {text!r}"
        )
    return text[: text.index(sentinel)]


def special_token_id(tokenizer: Any, text: str) -> int | None:
    """The id of `text` when it is one special (control) token in this tokenizer, else None.

    Ordinary words that happen to be one token ("assistant") are not special: a stop id for them
    would keep the word in the output text, unlike a stop string.
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.convert_tokens_to_ids(text) != ids[0]:
        return None
    token_id = ids[0]
    if token_id in getattr(tokenizer, "all_special_ids", ()):
        return token_id
    added = getattr(tokenizer, "added_tokens_decoder", {}).get(token_id)
    return token_id if getattr(added, "special", False) else None
