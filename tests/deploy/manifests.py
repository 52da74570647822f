"""Helpers for the deploy tests: find and render the KubeRay manifests, validate them against
the KubeRay CRD schemas (tests/deploy/crds/, copied from the KubeRay release the manifests
target) and the core Kubernetes schemas (kubernetes-validate), read their pod templates.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from magpie_ray.config import Config, register
from tests.deploy.kustomize import KUSTOMIZATION, render

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "deploy" / "kuberay"
CRDS = Path(__file__).resolve().parent / "crds"
KUBERNETES_VERSION = "1.37.0"  # the newest schema set kubernetes-validate 1.37.0 ships
ENTRYPOINT_ANNOTATION = "magpie-ray/example-entrypoint"
# Ray token auth: the Secret every shipped manifest names in authOptions.secretName, the key
# KubeRay reads the token from (ray-operator utils/constant.go, RAY_AUTH_TOKEN_SECRET_KEY), and
# the annotation by which a manifest without token auth says why it needs none.
AUTH_SECRET = "ray-auth-token"
AUTH_SECRET_KEY = "auth_token"
AUTH_EXEMPTION_ANNOTATION = "magpie-ray/no-token-auth-because"
# Set by KubeRay from authOptions; KubeRay leaves a variable a container already sets alone, so
# one set by hand would override what authOptions asks for.
KUBERAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# The CRDs are 2 MB of YAML: libyaml reads them in under a second, pure Python in 15.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in KUBERAY.rglob(KUSTOMIZATION))


def manifest_files() -> list[Path]:
    """Every YAML under deploy/kuberay that is a Kubernetes resource (not a kustomization or
    an RFC 6902 patch, which is a list)."""
    files = []
    for path in sorted(KUBERAY.rglob("*.yaml")):
        if path.name == KUSTOMIZATION:
            continue
        docs = list(yaml.safe_load_all(path.read_text()))
        if all(isinstance(d, dict) and "kind" in d for d in docs):
            files.append(path)
    return files


@functools.cache
def rendered() -> dict[str, list[dict]]:
    """Every kustomization (bases and overlays), rendered: {path relative to the repo: docs}.
    Cached: callers must not modify the documents."""
    return {str(d.relative_to(REPO)): render(d) for d in kustomizations()}


def _strict(schema):
    """An OpenAPI structural schema that, like `kubectl apply --validate=strict`, rejects
    unknown fields: objects with `properties` get additionalProperties: false unless they
    preserve unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """{(apiVersion, kind): validator} for every served version of the copied CRDs."""
    validators = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_LOADER)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def crd_errors(doc: dict) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    validator = crd_validators().get(key)
    if validator is None:
        return [f"no CRD schema for {key}; known: {sorted(crd_validators())}"]
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def core_errors(kind: str, body: dict) -> list[str]:
    """Validate `body` as a core v1 object of `kind` (strict: unknown fields are errors)."""
    obj = {"apiVersion": "v1", "kind": kind, **body}
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'/'.join(map(str, err.path))}: {err.message}"]
    return []


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def pod_templates(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod template) for the head, every worker group and a RayJob's submitter."""
    spec = cluster_spec(doc)
    yield "head", spec["headGroupSpec"]["template"]
    for group in spec.get("workerGroupSpecs", []):
        yield f"worker group {group['groupName']}", group["template"]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield "submitter", doc["spec"]["submitterPodTemplate"]


def auth_problems(doc: dict) -> list[str]:
    """Why `doc` is not locked with Ray token auth from a Secret; empty when it is (authOptions
    `mode: token` with a `secretName`, no container setting the auth variables itself), or when
    it has no token auth and its AUTH_EXEMPTION_ANNOTATION says why (a throwaway local dev
    cluster). An exemption on a manifest that has token auth is a problem too (it misleads)."""
    where = "spec.rayClusterSpec" if doc["kind"] == "RayJob" else "spec"
    auth = cluster_spec(doc).get("authOptions") or {}
    reason = str((doc["metadata"].get("annotations") or {}).get(AUTH_EXEMPTION_ANNOTATION, ""))
    # KubeRay turns auth on only for an explicit `mode: token` (utils.IsAuthEnabled).
    if auth.get("mode") != "token":
        if reason.strip():
            return []
        return [
            f"{where}.authOptions is {auth or 'missing'}: without token auth anyone who reaches"
            f" port 8265 runs code on this cluster. Set {where}.authOptions to {{mode: token,"
            f" secretName: {AUTH_SECRET}}}, or, for a cluster that needs none (a throwaway"
            f" local dev cluster), say why in metadata.annotations[{AUTH_EXEMPTION_ANNOTATION}]"
        ]
    problems = []
    if not auth.get("secretName"):
        problems.append(
            f"{where}.authOptions.secretName is not set: name the Secret that holds the token"
            f" (key {AUTH_SECRET_KEY}), e.g. {AUTH_SECRET}, so clients can read it"
        )
    if reason:
        problems.append(
            f"annotation {AUTH_EXEMPTION_ANNOTATION} on a manifest with token auth: remove it"
        )
    for name, template in pod_templates(doc):
        for c in template["spec"]["containers"]:
            hand_set = sorted({e["name"] for e in c.get("env", [])} & set(KUBERAY_AUTH_ENV))
            if hand_set:
                problems.append(
                    f"{name}/{c['name']} sets {hand_set} itself: leave them to KubeRay, which"
                    " sets them from authOptions and never overrides a container's own"
                )
    return problems


def quantity(value) -> float:
    """A Kubernetes CPU/GPU quantity ("8", "500m", 2) as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def group_resources(group: dict) -> dict[str, float]:
    """Ray's CPU and GPU on one pod of a group: rayStartParams override the container limits,
    as in KubeRay."""
    params = group.get("rayStartParams") or {}
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    return {
        "CPU": quantity(params.get("num-cpus", limits.get("cpu", 0))),
        "GPU": quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
    }


def ray_resources(doc: dict) -> dict[str, float]:
    """Ray's CPU and GPU totals of the cluster once every worker pod (`replicas`) is up."""
    spec = cluster_spec(doc)
    total = group_resources(spec["headGroupSpec"])
    for group in spec.get("workerGroupSpecs", []):
        for name, amount in group_resources(group).items():
            total[name] += group.get("replicas", 1) * amount
    return total


def entrypoint(doc: dict) -> str:
    if doc["kind"] == "RayJob":
        return doc["spec"]["entrypoint"]
    return doc["metadata"]["annotations"][ENTRYPOINT_ANNOTATION]


def compose_entrypoint(command: str) -> Config:
    """The Config a `python -m magpie_ray ...` command line composes to, as __main__ does."""
    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        dcfg = compose(config_name="config", overrides=hydra_overrides(command))
    return OmegaConf.to_object(dcfg)


def hydra_overrides(command: str) -> list[str]:
    """The overrides of a `python -m magpie_ray ...` command line."""
    argv = shlex.split(command)
    if argv[:3] != ["python", "-m", "magpie_ray"]:
        raise ValueError(f"not a `python -m magpie_ray` command: {command!r}")
    return argv[3:]
