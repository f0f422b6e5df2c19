"""cluster/: the launcher YAMLs pass Ray's own validation, the KubeRay manifests the v1.7.0 CRD schemas (strict)
and the operator's rules; broken definitions fail; the image, Ray and torch pins agree everywhere."""

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

from cest import assets
from cluster import validate

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = ("aws.yaml", "gcp.yaml")
RAY_IMAGE = f"rayproject/ray:{ray.__version__}-py312-gpu"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def kuberay_documents() -> list[tuple[str, dict]]:
    return [
        (path.name, document)
        for path in sorted((CLUSTER / "kuberay").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document["apiVersion"].startswith("ray.io/")
    ]


# Ray cluster launcher ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config

    config = load(name)
    assert validate.launcher_errors(config) == []
    prepared = prepare_config(config)
    types = prepared["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0} and types["head"]["max_workers"] == 0
    assert types["gpu_worker"]["resources"] == {"CPU": 8, "GPU": 1}
    assert types["gpu_worker"]["min_workers"] == 0 < types["gpu_worker"]["max_workers"]  # autoscaling
    assert prepared["docker"]["image"] == RAY_IMAGE
    assert prepared["worker_setup_commands"][0] == prepared["head_setup_commands"][0] == "~/cest/cluster/install.sh ~/cest"
    assert prepared["file_mounts"] == {"~/cest": "."}
    assert any("mlflow server" in command for command in prepared["head_start_ray_commands"])
    assert all("MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in command
               for command in prepared["worker_start_ray_commands"] if "ray start" in command)


def broken_launcher(change) -> dict:
    config = load("aws.yaml")
    change(config)
    return config


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(max_worker=4), r"\(top level\): Additional properties are not allowed \('max_worker'"),
        (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5), r"0\.5 is not of type 'integer'"),
        (lambda c: c["docker"].update(imag="rayproject/ray"), r"docker: Additional properties .*'imag'"),
        (lambda c: c["available_node_types"]["gpu_worker"].update(min_worker=1), r"gpu_worker: Additional properties .*'min_worker'"),
        (lambda c: c.update(head_node_type="ray_head"), r"head_node_type` must be one of"),
        (lambda c: (c.update(max_workers=4), c["available_node_types"]["gpu_worker"].update(min_workers=5)),
         r"smaller than the sum of `min_workers`"),
    ],
)
def test_broken_launcher_config_fails(change, message):
    (error,) = validate.launcher_errors(broken_launcher(change))
    assert re.search(message, error), error


# KubeRay ------------------------------------------------------------------------------------------------------
def test_kuberay_manifests_pass_the_strict_crd_schemas_and_the_operator_rules():
    documents = kuberay_documents()
    assert sorted(document["kind"] for _, document in documents) == ["RayCluster", "RayJob", "RayJob", "RayJob"]
    for name, document in documents:
        assert validate.kuberay_errors(document) == [], name
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        assert validate.file_errors(path) == []


def clusters(document: dict) -> dict:
    return document["spec"]["rayClusterSpec"] if document["kind"] == "RayJob" else document["spec"]


def containers(document: dict) -> list[dict]:
    cluster = clusters(document)
    groups = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    return [container for group in groups for container in group["template"]["spec"]["containers"]]


def test_kuberay_jobs_use_gpus_shared_storage_mlflow_and_clean_up():
    jobs = {document["metadata"]["name"]: document for _, document in kuberay_documents() if document["kind"] == "RayJob"}
    assert set(jobs) == {"cest-preprocess", "cest-train", "cest-eval"}
    assert jobs["cest-preprocess"]["spec"]["entrypoint"].startswith("python -m pipelines.preprocess ")
    assert jobs["cest-train"]["spec"]["entrypoint"].startswith("python jobs/train.py --data /data/clips --workers 4 --gpus-per-worker 1 ")
    assert jobs["cest-eval"]["spec"]["entrypoint"].startswith("python jobs/eval.py ")
    for job in jobs.values():
        assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0
    train_gpus = [group for group in clusters(jobs["cest-train"])["workerGroupSpecs"]]
    assert sum(group["replicas"] * int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
               for group in train_gpus) == 4  # --workers 4 --gpus-per-worker 1
    for _, document in kuberay_documents():
        for container in containers(document):
            assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in container["env"]
            assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        for group in clusters(document)["workerGroupSpecs"]:
            if group["groupName"] == "gpu":
                assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def train_job() -> dict:
    (document,) = yaml.safe_load_all((CLUSTER / "kuberay" / "rayjob-train.yaml").read_text())
    return document


def first_group(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda j: rename(first_group(j), "maxReplicas", "maxReplica"),
         r"workerGroupSpecs/0: .*'maxReplica' was unexpected|workerGroupSpecs/0: 'maxReplicas' is a required property"),
        (lambda j: rename(j["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
         r"spec: Additional properties are not allowed \('shutdownAfterJobFinish' was unexpected\)"),
        (lambda j: rename(first_group(j)["template"]["spec"]["containers"][0], "volumeMounts", "volumeMount"),
         r"containers/0: Additional properties are not allowed \('volumeMount' was unexpected\)"),
        (lambda j: j["spec"].update(ttlSecondsAfterFinished="600"), r"spec/ttlSecondsAfterFinished: '600' is not of type 'integer'"),
        (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
         r"rayStartParams/num-cpus: value 0 must be a string"),
        (lambda j: first_group(j).update(minReplicas=5), r"workerGroupSpecs/0: minReplicas 5 > maxReplicas 4"),
        (lambda j: first_group(j).update(replicas=6), r"workerGroupSpecs/0: replicas 6 outside \[minReplicas 4, maxReplicas 4\]"),
        (lambda j: j["spec"].update(clusterSelector={"ray.io/cluster": "cest"}),
         r"exactly one of rayClusterSpec and clusterSelector, got \['rayClusterSpec', 'clusterSelector'\]"),
        (lambda j: j["spec"].pop("rayClusterSpec"), r"exactly one of rayClusterSpec and clusterSelector, got neither"),
        (lambda j: j.update(apiVersion="ray.io/v1alpha1"), r"not a KubeRay ray.io/v1 RayCluster or RayJob"),
    ],
)
def test_broken_kuberay_manifest_fails(change, message):
    job = train_job()
    change(job)
    errors = validate.kuberay_errors(job)
    assert any(re.search(message, error) for error in errors), errors


def test_the_plain_crd_schema_would_accept_a_misspelt_key():
    """Why the schema is made strict: as published, the CRD lets `maxReplica` through (the operator ignores it)."""
    import jsonschema

    job = train_job()
    first_group(job)["maxReplica"] = 4
    assert list(jsonschema.Draft7Validator(validate.published_schema("RayJob")).iter_errors(job)) == []
    assert any("'maxReplica' was unexpected" in error for error in validate.kuberay_errors(job))


def test_strict_keeps_open_what_the_schema_leaves_open():
    schema = {
        "type": "object",
        "properties": {
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
            "preserved": {"type": "object", "properties": {"a": {"type": "string"}}, "x-kubernetes-preserve-unknown-fields": True},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object"},
        },
    }
    strict = validate.strict(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["closed"]["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["preserved"]
    assert strict["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in strict["properties"]["free"]
    assert "additionalProperties" not in schema  # the input is not modified


def entrypoint_flags(entrypoint: str) -> tuple[list[str], list[str]]:
    """(the command that prints the script's --help, the --flags the entrypoint passes)."""
    words = shlex.split(entrypoint)
    assert words[0] == "python"
    command = words[:3] if words[1] == "-m" else words[:2]
    return [sys.executable, *command[1:], "--help"], [word for word in words if word.startswith("--")]


@pytest.mark.parametrize("job", ["rayjob-preprocess.yaml", "rayjob-train.yaml", "rayjob-eval.yaml"])
def test_job_entrypoint_flags_are_ones_the_script_accepts(job):
    (document,) = yaml.safe_load_all((CLUSTER / "kuberay" / job).read_text())
    help_command, flags = entrypoint_flags(document["spec"]["entrypoint"])
    if help_command[1] != "-m" and not (ROOT / help_command[1]).is_file():
        pytest.skip(f"{help_command[1]} is not in this checkout yet")
    result = subprocess.run(help_command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    missing = [flag for flag in flags if flag not in result.stdout]
    assert missing == [], f"{job}: {help_command[1:-1]} does not accept {missing}"


# One image, one Ray, one torch -------------------------------------------------------------------------------
def test_pins_agree_everywhere():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"ray[train,data,default]=={ray.__version__}" in dependencies
    assert (CLUSTER / "Dockerfile").read_text().count(f"FROM {RAY_IMAGE}\n") == 1
    assert "RUN cluster/install.sh" in (CLUSTER / "Dockerfile").read_text()
    for name in LAUNCHERS:
        assert load(name)["docker"]["image"] == RAY_IMAGE
    for _, document in kuberay_documents():
        assert clusters(document)["rayVersion"] == ray.__version__
        assert {container["image"] for container in containers(document)} == {"<REGISTRY>/cest-faces:0.1.0"}
    makefile_torch = re.search(r"^TORCH \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    install_torch = re.search(r"^TORCH=\$\{TORCH:-(\S+)\}", (CLUSTER / "install.sh").read_text(), re.M).group(1)
    assert makefile_torch == install_torch == "torch==2.13.0"


def test_validate_command_line_checks_every_definition(capsys, tmp_path):
    for crd in validate.CRD_ASSETS.values():  # outside main(), which turns an asset error into its exit code
        assets.fetch(crd)
    assert validate.main([]) == 0
    assert capsys.readouterr().out.strip() == f"{len(validate.definitions())} files, 0 errors"
    broken = tmp_path / "rayjob.yaml"
    job = train_job()
    first_group(job)["minReplicas"] = 9
    broken.write_text(yaml.safe_dump(job))
    assert validate.main([str(broken)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"{broken}: spec/rayClusterSpec/workerGroupSpecs/0: minReplicas 9 > maxReplicas 4"
    assert captured.out.strip() == "1 files, 1 errors"
