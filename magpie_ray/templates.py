"""Model-family pre-query templates: load them from YAML and check them against a tokenizer.

Magpie samples instructions by handing an aligned chat model only the start of a user turn (the
"pre-query"), e.g. `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n` for Llama-3.
One YAML file per model family under `magpie_ray/templates/` holds that text, the strings and
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
- Optional `banned_first_token_prefixes` and `sanitize` are the family's defaults for the
  instruction-sampling options of the same names (see config.InstructionSampling).
- Optional `chat_template` (Jinja) is used only by a tokenizer that ships none (Vicuna's);
  `fit_chat_template` installs it before validation, so it is checked like a tokenizer's own.
- `validate_against_tokenizer` runs before any model loads and raises `TemplateError` (or its
  subclass `TemplateMismatchError`) with the fix in the message. A family text that differs from
  the chat template's rendering only in ways the tokenizer erases (same token ids) is accepted,
  because the model sees the same input.
- Everything here is a pure function of YAML text and a tokenizer object; nothing loads a model.
  A tokenizer is anything shaped like a Hugging Face `PreTrainedTokenizerBase`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

BUILTIN_DIR = Path(__file__).with_name("templates")
SYSTEM_PROMPT_PLACEHOLDER = "{system_prompt}"

# No surrounding whitespace: some chat templates `| trim` message content.
_USER_SENTINEL = "MAGPIEUSERSENTINEL"
_ASSISTANT_SENTINEL = "MAGPIEASSISTANTSENTINEL"
_SYSTEM_SENTINEL = "MAGPIESYSTEMSENTINEL"

_REQUIRED_KEYS = ("name", "pre_query_template", "stop_strings", "stop_token_ids")
_OPTIONAL_KEYS = (
    "models",
    "system_prompt_template",
    "system_prompts",
    "follow_up_template",
    "banned_first_token_prefixes",
    "sanitize",
    "chat_template",
)
_FAMILY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FIX = "Fix: edit the family's YAML file or pick another `model.family`."


class TemplateError(ValueError):
    """A family definition is invalid or does not fit the tokenizer it is used with."""


class UnknownFamilyError(TemplateError):
    """No YAML file defines the requested family."""


class TemplateMismatchError(TemplateError):
    """A family's text differs from what the tokenizer's chat template renders."""


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
    # Jinja chat template for models whose tokenizer ships none (Vicuna); a tokenizer's own wins.
    chat_template: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        object.__setattr__(
            self, "banned_first_token_prefixes", tuple(self.banned_first_token_prefixes)
        )
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "models", tuple(self.models))
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
    for key in ("system_prompt_template", "follow_up_template", "chat_template"):
        data.setdefault(key, None)
        check(key, data[key] is None or (isinstance(data[key], str) and data[key]), "text or null")
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


def render_pre_query(family: Family, system_prompt_key: str | None = None) -> str:
    """The pre-query text: the family default, or its system turn filled with a named prompt."""
    if system_prompt_key is None:
        return family.pre_query_template
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
    # str.replace, not format: prompts and templates may contain literal braces.
    return family.system_prompt_template.replace(
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
    messages.append({"role": "user", "content": _USER_SENTINEL})
    return _render_prefix(tokenizer, messages)


def validate_against_tokenizer(family: Family, tokenizer: Any) -> None:
    """Raise `TemplateError` unless `family` produces the input `tokenizer`'s model expects.

    Checks (a) every pre-query and the follow-up text against the chat template's own rendering,
    when the tokenizer has one; (b) BOS handling of every pre-query under
    `add_special_tokens=False`; (c) that stop strings which are special tokens have their ids in
    the family's `stop_token_ids` (when it lists any).
    """
    pre_queries = {"pre-query": render_pre_query(family)}
    for key in family.system_prompts:
        pre_queries[f"system prompt {key!r}"] = render_pre_query(family, key)

    if getattr(tokenizer, "chat_template", None):
        _check_chat_template(family, tokenizer)
    for what, text in pre_queries.items():
        _check_bos(family, tokenizer, what, text)
    if family.stop_token_ids:
        for text in family.stop_strings:
            token_id = _special_token_id(tokenizer, text)
            if token_id is not None and token_id not in family.stop_token_ids:
                raise TemplateError(
                    f"family {family.name!r}: stop string {text!r} is token id {token_id} in this"
                    f" tokenizer, but the family's stop_token_ids are"
                    f" {list(family.stop_token_ids)}; the ids belong to another tokenizer. {_FIX}"
                )


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


def stop_token_ids_for(family: Family, tokenizer: Any) -> list[int]:
    """The family's stop ids plus the ids of its stop strings that are special tokens here."""
    ids = list(family.stop_token_ids)
    for text in family.stop_strings:
        token_id = _special_token_id(tokenizer, text)
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    return ids


def _render_prefix(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat template's text before the last message's content (a sentinel)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    sentinel = messages[-1]["content"]
    if sentinel not in text:
        raise TemplateError(
            f"the chat template dropped the message content {sentinel!r}; rendered {text!r}"
        )
    return text[: text.index(sentinel)]


def _same_model_input(tokenizer: Any, ours: str, theirs: str) -> bool:
    if ours == theirs:
        return True
    # e.g. legacy SentencePiece encodes "<s> [INST] " and "<s>[INST] " identically.
    encode = functools.partial(tokenizer.encode, add_special_tokens=False)
    return encode(ours) == encode(theirs)


def _mismatch(family: Family, what: str, ours: str, theirs: str) -> TemplateMismatchError:
    return TemplateMismatchError(
        f"family {family.name!r}: {what} does not match the tokenizer's chat template\n"
        f"  family YAML:   {ours!r}\n"
        f"  chat template: {theirs!r}\n"
        f"{_FIX}"
    )


def _check_chat_template(family: Family, tokenizer: Any) -> None:
    user = {"role": "user", "content": _USER_SENTINEL}
    theirs = _render_prefix(tokenizer, [user])
    if not _same_model_input(tokenizer, family.pre_query_template, theirs):
        raise _mismatch(family, "pre_query_template", family.pre_query_template, theirs)

    if family.system_prompt_template is not None:
        # A probe checks the system turn's shape even for a family without named prompts.
        prompts = {"system_prompt_template": _SYSTEM_SENTINEL}
        prompts.update({f"system prompt {k!r}": v for k, v in family.system_prompts.items()})
        for what, prompt in prompts.items():
            ours = family.system_prompt_template.replace(SYSTEM_PROMPT_PLACEHOLDER, prompt)
            try:
                theirs = _render_prefix(tokenizer, [{"role": "system", "content": prompt}, user])
            except TemplateError:
                raise
            except Exception as err:  # templates reject a system role in their own ways
                raise TemplateMismatchError(
                    f"family {family.name!r}: the tokenizer's chat template cannot render a system"
                    f" turn ({err}); set system_prompt_template: null and system_prompts: {{}}."
                    f" {_FIX}"
                ) from err
            if not _same_model_input(tokenizer, ours, theirs):
                raise _mismatch(family, what, ours, theirs)

    if family.follow_up_template is not None:
        conversation = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": _ASSISTANT_SENTINEL},
            user,
        ]
        rendered = _render_prefix(tokenizer, conversation)
        # What follows the assistant's content: its end-of-turn text, then the follow-up.
        between = rendered[rendered.index(_ASSISTANT_SENTINEL) + len(_ASSISTANT_SENTINEL) :]
        if not between.endswith(family.follow_up_template):
            raise _mismatch(
                family,
                "follow_up_template (text after an assistant turn, before the next user message)",
                family.follow_up_template,
                between,
            )


def _check_bos(family: Family, tokenizer: Any, what: str, text: str) -> None:
    bos = tokenizer.bos_token_id
    if bos is None:
        return
    ids = tokenizer.encode(text, add_special_tokens=False)
    bos_text = getattr(tokenizer, "bos_token", None)
    if ids[:2] == [bos, bos]:
        raise TemplateError(
            f"family {family.name!r}: {what} {text!r} starts with two BOS tokens (id {bos});"
            f" write the BOS text once. {_FIX}"
        )
    if bos_text and text.startswith(bos_text) and ids[0] != bos:
        raise TemplateError(
            f"family {family.name!r}: {what} {text!r} starts with {bos_text!r}, but the tokenizer"
            f" encodes it as {ids[:3]}..., not as the BOS token id {bos}. {_FIX}"
        )
    # A tokenizer that prepends BOS by default expects it; our engines turn that off, so the
    # pre-query text itself must carry it.
    if tokenizer.encode("a")[:1] == [bos] and ids[:1] != [bos]:
        raise TemplateError(
            f"family {family.name!r}: {what} {text!r} lacks the BOS token {bos_text!r}"
            f" (id {bos}) that this tokenizer puts first; engines encode pre-queries with"
            f" add_special_tokens=False, so the text must start with it. {_FIX}"
        )


def _special_token_id(tokenizer: Any, text: str) -> int | None:
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
