"""KubeRay manifests: every manifest and every rendered kustomization (bases and overlays) is
valid against the KubeRay CRD schemas and the core Kubernetes schemas, and means what the
deployment guide says: Ray token auth from a Secret (or an annotation saying why a cluster needs
none), CPU-only heads, GPU requests equal to limits, /dev/shm in memory, the HF token from a
Secret, RayJobs that clean up, retry and write to object storage, and entrypoints whose Hydra
overrides compose against conf/ into a job whose actor pool fits its cluster.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from magpie_ray.preflight import check_resources
from magpie_ray.validation import validate_static
from tests.deploy import manifests as m
from tests.deploy.kustomize import KustomizeError, json_patch, render
from tests.deploy.manifests import compose_entrypoint

RENDERED = m.rendered()
DOCS = [
    pytest.param(doc, id=f"{where}:{doc['kind']}/{doc['metadata']['name']}")
    for where, docs in RENDERED.items()
    for doc in docs
]
RAY_VERSION = "2.60.0"
OVERLAYS = {
    "deploy/kuberay/overlays/generate-1node-8gpu",
    "deploy/kuberay/overlays/cpu-dev",
    "deploy/kuberay/overlays/autoscaling-gpu",
    "deploy/kuberay/overlays/generate-2node-16gpu-405b",
}


def containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def test_every_kustomization_renders_ray_resources_and_the_overlays_exist():
    assert OVERLAYS <= set(RENDERED), f"missing overlays: {OVERLAYS - set(RENDERED)}"
    for where, docs in RENDERED.items():
        assert docs, f"{where} renders nothing"
        kinds = {d["kind"] for d in docs}
        assert kinds <= {"RayJob", "RayCluster"}, f"{where} renders {kinds}"


def test_the_overlays_are_a_one_node_8_gpu_rayjob_and_a_cpu_dev_raycluster():
    (job,) = RENDERED["deploy/kuberay/overlays/generate-1node-8gpu"]
    assert job["kind"] == "RayJob"
    (workers,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == 1 and m.group_resources(workers)["GPU"] == 8
    for doc in (job, *RENDERED["deploy/kuberay/overlays/cpu-dev"]):
        for _, template in m.pod_templates(doc):
            assert {c["image"] for c in containers(template)} == {
                "registry.example.com/magpie-ray:0.1.0"
            }, "the overlay's `images` entry must reach every container"
    (dev,) = RENDERED["deploy/kuberay/overlays/cpu-dev"]
    assert dev["kind"] == "RayCluster"
    assert m.ray_resources(dev)["GPU"] == 0, "the dev cluster must need no GPU node"


@pytest.mark.parametrize("path", m.manifest_files(), ids=lambda p: str(p.relative_to(m.REPO)))
def test_manifest_files_are_valid_against_the_kuberay_crds(path):
    for doc in yaml.safe_load_all(path.read_text()):
        errors = m.crd_errors(doc)
        assert not errors, f"{path}: invalid {doc['kind']}:\n" + "\n".join(errors)


@pytest.mark.parametrize("doc", DOCS)
def test_rendered_resources_are_valid_against_the_kuberay_crds(doc):
    errors = m.crd_errors(doc)
    assert not errors, "invalid against the CRD schema:\n" + "\n".join(errors)


@pytest.mark.parametrize("doc", DOCS)
def test_pod_templates_and_metadata_are_valid_core_kubernetes(doc):
    errors = m.core_errors("ConfigMap", {"metadata": doc["metadata"]})
    for where, template in m.pod_templates(doc):
        pod_template = {"metadata": {"name": "check"}, "template": template}
        errors += [f"{where}: {e}" for e in m.core_errors("PodTemplate", pod_template)]
    assert not errors, "\n".join(errors)


def test_validation_rejects_typos_and_wrong_types():
    """The checks above can fail: an unknown field, a wrong type and a bad container field."""
    (job,) = RENDERED["deploy/kuberay/rayjob"]
    typo = copy.deepcopy(job)
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    assert any("shutdownAfterJobFinish" in e for e in m.crd_errors(typo))
    wrong_type = json_patch(job, [{"op": "replace", "path": "/spec/backoffLimit", "value": "2"}])
    assert any("backoffLimit" in e for e in m.crd_errors(wrong_type))
    template = copy.deepcopy(job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"])
    template["spec"]["containers"][0]["volumeMount"] = []
    assert m.core_errors("PodTemplate", {"metadata": {"name": "x"}, "template": template})


@pytest.mark.parametrize("doc", DOCS)
def test_token_auth_is_on_from_the_guides_secret(doc):
    problems = m.auth_problems(doc)
    assert not problems, "\n".join(problems)
    # Every shipped manifest, overlays included, keeps it: none uses the exemption.
    assert m.cluster_spec(doc)["authOptions"] == {"mode": "token", "secretName": m.AUTH_SECRET}


def test_a_manifest_without_token_auth_fails_unless_an_overlay_says_why(tmp_path):
    (cluster,) = RENDERED["deploy/kuberay/raycluster"]
    (job,) = RENDERED["deploy/kuberay/rayjob"]
    open_job = json_patch(job, [{"op": "remove", "path": "/spec/rayClusterSpec/authOptions"}])
    assert any(m.AUTH_EXEMPTION_ANNOTATION in p for p in m.auth_problems(open_job))
    disabled = json_patch(
        cluster, [{"op": "replace", "path": "/spec/authOptions/mode", "value": "disabled"}]
    )
    assert any("port 8265" in p for p in m.auth_problems(disabled))
    no_secret = json_patch(cluster, [{"op": "remove", "path": "/spec/authOptions/secretName"}])
    assert any("secretName" in p for p in m.auth_problems(no_secret))
    hand_set = json_patch(
        cluster,
        [
            {
                "op": "add",
                "path": "/spec/headGroupSpec/template/spec/containers/0/env/-",
                "value": {"name": "RAY_AUTH_MODE", "value": "disabled"},
            }
        ],
    )
    assert any("RAY_AUTH_MODE" in p for p in m.auth_problems(hand_set))

    # An overlay that drops auth and says why, as a throwaway local dev cluster would.
    annotation = m.AUTH_EXEMPTION_ANNOTATION.replace("/", "~1")
    exempt = [
        {"op": "remove", "path": "/spec/authOptions"},
        {
            "op": "add",
            "path": f"/metadata/annotations/{annotation}",
            "value": "kind cluster on a laptop, port 8265 never leaves localhost",
        },
    ]
    (tmp_path / "exempt.yaml").write_text(yaml.safe_dump(exempt))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(m.KUBERAY / "raycluster")],
                "patches": [
                    {"path": "exempt.yaml", "target": {"kind": "RayCluster", "name": "magpie-ray"}}
                ],
            }
        )
    )
    (dev,) = render(tmp_path)
    assert "authOptions" not in dev["spec"] and m.auth_problems(dev) == []
    assert not m.crd_errors(dev), "the exemption is an annotation KubeRay accepts"
    silent = json_patch(
        dev, [{"op": "replace", "path": f"/metadata/annotations/{annotation}", "value": " "}]
    )
    assert m.auth_problems(silent), "an empty reason is no reason"
    stale = json_patch(cluster, [exempt[1]])
    assert any("remove it" in p for p in m.auth_problems(stale))


@pytest.mark.parametrize("doc", DOCS)
def test_ray_version_and_image_are_the_same_everywhere(doc):
    spec = m.cluster_spec(doc)
    assert spec["rayVersion"] == RAY_VERSION
    images = {c["image"] for _, t in m.pod_templates(doc) for c in containers(t)}
    assert len(images) == 1, f"head and workers must run one image, found {images}"


@pytest.mark.parametrize("doc", DOCS)
def test_the_head_is_cpu_only(doc):
    head = m.cluster_spec(doc)["headGroupSpec"]
    assert head["rayStartParams"].get("num-gpus") == "0", "the head must advertise no GPU"
    for c in containers(head["template"]):
        for section in ("requests", "limits"):
            assert "nvidia.com/gpu" not in c.get("resources", {}).get(section, {}), (
                f"head container {c['name']} {section} a GPU"
            )


@pytest.mark.parametrize("doc", DOCS)
def test_gpu_requests_equal_limits_and_gpu_pods_tolerate_gpu_nodes(doc):
    for where, template in m.pod_templates(doc):
        gpus = 0
        for c in containers(template):
            resources = c.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            assert requests.get("nvidia.com/gpu") == limits.get("nvidia.com/gpu"), (
                f"{where}/{c['name']}: GPU requests {requests} != limits {limits}"
            )
            for name in ("cpu", "memory"):
                assert requests.get(name) == limits.get(name), f"{where}/{c['name']}: {name}"
            gpus += int(limits.get("nvidia.com/gpu", 0))
        tolerated = {t.get("key") for t in template["spec"].get("tolerations", [])}
        assert ("nvidia.com/gpu" in tolerated) == (gpus > 0), (
            f"{where}: a GPU pod tolerates the nvidia.com/gpu taint, a CPU pod does not"
        )


@pytest.mark.parametrize("doc", DOCS)
def test_every_ray_container_has_an_in_memory_dev_shm(doc):
    for where, template in m.pod_templates(doc):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for c in containers(template):
            mounts = {v["mountPath"]: v["name"] for v in c.get("volumeMounts", [])}
            assert "/dev/shm" in mounts, f"{where}/{c['name']} mounts no /dev/shm"
            volume = volumes[mounts["/dev/shm"]]
            assert volume.get("emptyDir", {}).get("medium") == "Memory", (
                f"{where}: /dev/shm must be an emptyDir with medium Memory, got {volume}"
            )


@pytest.mark.parametrize("doc", DOCS)
def test_every_ray_container_gets_the_hf_token_from_a_secret(doc):
    for where, template in m.pod_templates(doc):
        for c in containers(template):
            env = {e["name"]: e for e in c.get("env", [])}
            assert "HF_TOKEN" in env, f"{where}/{c['name']} has no HF_TOKEN"
            ref = env["HF_TOKEN"].get("valueFrom", {}).get("secretKeyRef", {})
            assert ref == {"name": "hf-token", "key": "token"}, (
                f"{where}/{c['name']}: HF_TOKEN must come from Secret hf-token, key token"
            )


@pytest.mark.parametrize("doc", [d for d in DOCS if d.values[0]["kind"] == "RayJob"])
def test_rayjobs_clean_up_retry_and_write_to_object_storage(doc):
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0, "keep the cluster a while for `ray job logs`"
    assert spec["backoffLimit"] >= 1, "a retry resumes from output_dir: allow one"
    cfg = compose_entrypoint(spec["entrypoint"])
    assert cfg.output_dir.startswith(("s3://", "gs://")), (
        f"output_dir={cfg.output_dir}: the cluster's disks go with it; use object storage"
    )


@pytest.mark.parametrize("doc", DOCS)
def test_entrypoint_composes_and_its_actor_pool_fits_the_cluster(doc):
    cfg = compose_entrypoint(m.entrypoint(doc))
    validate_static(cfg)
    check_resources(cfg, m.ray_resources(doc))
    if m.ray_resources(doc)["GPU"]:
        assert cfg.cluster.gpus_per_actor >= cfg.model.tensor_parallel_size >= 1
        assert cfg.engine.kind == "vllm"
        m_ = cfg.model
        if m_.pipeline_parallel_size > 1:
            assert cfg.cluster.gpus_per_actor == m_.tensor_parallel_size * m_.pipeline_parallel_size


def test_the_8_gpu_run_uses_every_gpu_with_one_engine_per_gpu():
    (job,) = RENDERED["deploy/kuberay/overlays/generate-1node-8gpu"]
    cfg = compose_entrypoint(job["spec"]["entrypoint"])
    actors_gpus = cfg.cluster.num_actors * cfg.cluster.gpus_per_actor
    assert actors_gpus == m.ray_resources(job)["GPU"] == 8
    assert cfg.run_name == "magpie-air" and cfg.generate.num_samples == 1_000_000


def test_the_405b_run_is_one_engine_over_two_8_gpu_nodes():
    """Tensor parallel inside a node, pipeline parallel across nodes: 8 x 2 = every GPU."""
    (job,) = RENDERED["deploy/kuberay/overlays/generate-2node-16gpu-405b"]
    (workers,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    per_pod = m.group_resources(workers)["GPU"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    cfg = compose_entrypoint(job["spec"]["entrypoint"])
    assert "405B" in cfg.model.path and cfg.engine.kind == "vllm"
    assert (cfg.model.tensor_parallel_size, cfg.model.pipeline_parallel_size) == (per_pod, 2)
    assert cfg.cluster.num_actors == 1
    assert cfg.cluster.gpus_per_actor == m.ray_resources(job)["GPU"] == 2 * per_pod == 16


def test_the_autoscaling_cluster_starts_the_pool_on_its_first_node_and_grows_it_to_every_gpu():
    (doc,) = RENDERED["deploy/kuberay/overlays/autoscaling-gpu"]
    spec = doc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    (workers,) = spec["workerGroupSpecs"]
    assert workers["minReplicas"] <= workers["replicas"] < workers["maxReplicas"]
    cfg = compose_entrypoint(m.entrypoint(doc))
    per_pod = m.group_resources(workers)["GPU"]
    cl = cfg.cluster
    assert cl.num_actors * cl.gpus_per_actor == workers["replicas"] * per_pod
    assert cl.max_actors * cl.gpus_per_actor == workers["maxReplicas"] * per_pod


def test_renderer_applies_rfc6902_ops_and_refuses_what_it_cannot_render(tmp_path):
    doc = {"kind": "K", "metadata": {"name": "a"}, "spec": {"xs": [1, 2], "k/v": 0}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/spec/xs/-", "value": 3},
            {"op": "add", "path": "/spec/xs/0", "value": 0},
            {"op": "remove", "path": "/spec/xs/1"},
            {"op": "replace", "path": "/spec/k~1v", "value": 1},
            {"op": "test", "path": "/metadata/name", "value": "a"},
        ],
    )
    assert out["spec"] == {"xs": [0, 2, 3], "k/v": 1} and doc["spec"]["xs"] == [1, 2]
    with pytest.raises(KustomizeError):
        json_patch(doc, [{"op": "replace", "path": "/spec/missing", "value": 1}])
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(tmp_path)
