"""The package's shape: no import cycle, no module over 500 lines, the check layer below the
steps, vLLM imported only by engines, and one list per concept (every engine kind, export format
and tagger named once, in its registry)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "magpie_ray"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of ours that `name` imports anywhere (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    typing_only = {  # `if TYPE_CHECKING:` imports never run
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for candidate in (target, *(f"{target}.{a.name}" for a in node.names)):
                if candidate in modules and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules and a.name != name}
    return found


def test_no_import_cycle_and_no_module_over_500_lines():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*trail, target])}"
            if target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    long = {n: len(p.read_text().splitlines()) for n, p in modules.items()}
    assert {n: k for n, k in long.items() if k > 500} == {}


def test_the_check_layer_imports_no_step_code():
    """What `mode=check` runs (validation, preflight, the front door) loads without any step."""
    code = (
        "import sys; import magpie_ray.validation, magpie_ray.preflight, magpie_ray.cluster;"
        " print(sorted(m for m in sys.modules if m.startswith('magpie_ray.steps')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_vllm_is_imported_only_by_engines():
    for name, path in _modules().items():
        if name.startswith("magpie_ray.engines"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n == "vllm" or n.startswith("vllm.") for n in names), name


@pytest.mark.parametrize("word", ['"vllm"', '"hf"', '"sharegpt"', '"dpo.jsonl"'])
def test_engine_kinds_and_export_formats_are_named_only_in_their_registries(word):
    registries = {PACKAGE / "engines" / "registry.py", PACKAGE / "export_formats.py"}
    for path in PACKAGE.rglob("*.py"):
        if path in registries:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert word not in code, f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"


def test_every_tagger_is_named_once_outside_its_own_module_and_config_group():
    """Tagger names appear in code only in their module, the registry and the config schema
    (the `Config` field and its dataclass): everything else reads the registry."""
    from magpie_ray.taggers.registry import MODEL_TAGGERS

    allowed = {"config.py", "registry.py"}
    for tagger in MODEL_TAGGERS:
        own = Path(sys.modules[tagger.actor.__module__].__file__).name
        for path in PACKAGE.rglob("*.py"):
            if path.name in allowed | {own}:
                continue
            text = path.read_text()
            for needle in (f"cfg.{tagger.name}", f"config.{tagger.name}", f'("{tagger.name}",'):
                assert needle not in text, f"{path.relative_to(PACKAGE)} names {needle}"
