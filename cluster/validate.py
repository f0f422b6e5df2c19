"""Check the cluster definitions offline, before `ray up` or `kubectl apply`.

    python -m cluster.validate [FILE ...]      (from the repository root)

Checks every definition in cluster/ when no file is named; prints one line per error and exits 1 on any.

- Ray cluster-launcher YAMLs (aws.yaml, gcp.yaml): Ray's own `prepare_config` (merges the provider's
  defaults) then `validate_config` (ray/autoscaler/ray-schema.json: unknown keys, integer resource counts).
- KubeRay manifests (apiVersion ray.io/v1: RayCluster, RayJob): the OpenAPI v3 schema of the KubeRay v1.7.0
  CRDs (from the asset registry, `cest.assets`), made strict: every object schema that lists `properties` and
  neither allows other keys (`additionalProperties`) nor preserves unknown fields
  (`x-kubernetes-preserve-unknown-fields`) refuses keys it does not list, so a misspelt key is an error (the
  API server would silently drop it). Then the rules only the operator enforces: a RayJob has exactly one of
  rayClusterSpec and clusterSelector; every worker group has minReplicas <= maxReplicas (and replicas
  between them); rayStartParams values are strings. Other Kubernetes kinds in a file (PVC, Deployment,
  Service) are not checked here.
"""

from __future__ import annotations

import copy
import functools
import logging
import sys
from pathlib import Path

import jsonschema
import yaml

from cest.assets import AssetError, fetch

CLUSTER_DIR = Path(__file__).resolve().parent
KUBERAY_API = "ray.io/v1"
# libyaml's loader when PyYAML has it: the CRDs are 2 MB of YAML, about 6x faster to read than in pure Python.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CRD_ASSETS = {"RayCluster": "kuberay/ray.io_rayclusters.yaml", "RayJob": "kuberay/ray.io_rayjobs.yaml"}


def launcher_errors(config: dict) -> list[str]:
    """Errors of a Ray cluster-launcher config, as Ray reports them (empty when valid)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        return [f"{where}: {error.message}"]
    except (ValueError, KeyError, AssertionError) as error:
        return [str(error)]
    return []


def strict(schema: dict) -> dict:
    """A copy of an OpenAPI v3 schema in which object schemas listing `properties` refuse other keys."""
    schema = copy.deepcopy(schema)
    _close(schema)
    return schema


def _close(node) -> None:
    if isinstance(node, list):
        for item in node:
            _close(item)
        return
    if not isinstance(node, dict):
        return
    if (
        isinstance(node.get("properties"), dict)
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key, value in node.items():
        if key == "properties":  # a map from field names to schemas: recurse into each schema
            for field_schema in value.values():
                _close(field_schema)
        else:
            _close(value)


@functools.cache
def published_schema(kind: str) -> dict:
    """The v1 OpenAPI schema of a KubeRay kind as the registered KubeRay v1.7.0 CRD publishes it."""
    crd = yaml.load(fetch(CRD_ASSETS[kind]).read_text(), Loader=YAML_LOADER)
    (version,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@functools.cache
def crd_schema(kind: str) -> dict:
    """The strict v1 schema of a KubeRay kind (see `strict`)."""
    return strict(published_schema(kind))


def kuberay_errors(manifest: dict) -> list[str]:
    """Errors of a RayCluster or RayJob manifest (empty when valid)."""
    kind = manifest.get("kind")
    if manifest.get("apiVersion") != KUBERAY_API or kind not in CRD_ASSETS:
        return [f"not a KubeRay {KUBERAY_API} RayCluster or RayJob: apiVersion {manifest.get('apiVersion')!r}, kind {kind!r}"]
    validator = jsonschema.Draft7Validator(crd_schema(kind))
    errors = [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(top level)'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda error: list(map(str, error.absolute_path)))
    ]
    return errors + _operator_errors(kind, manifest.get("spec") or {})


def _operator_errors(kind: str, spec: dict) -> list[str]:
    errors = []
    if kind == "RayJob":
        given = [field for field in ("rayClusterSpec", "clusterSelector") if spec.get(field)]
        if len(given) != 1:
            errors.append(f"spec: a RayJob needs exactly one of rayClusterSpec and clusterSelector, got {given or 'neither'}")
        cluster = spec.get("rayClusterSpec") or {}
        prefix = "spec/rayClusterSpec"
    else:
        cluster, prefix = spec, "spec"
    head = cluster.get("headGroupSpec") or {}
    errors += _start_param_errors(f"{prefix}/headGroupSpec", head.get("rayStartParams"))
    for index, group in enumerate(cluster.get("workerGroupSpecs") or []):
        where = f"{prefix}/workerGroupSpecs/{index}"
        errors += _start_param_errors(where, group.get("rayStartParams"))
        low, high, replicas = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
        if all(isinstance(value, int) for value in (low, high)):  # missing ones are schema errors already
            if low > high:
                errors.append(f"{where}: minReplicas {low} > maxReplicas {high}")
            elif isinstance(replicas, int) and not low <= replicas <= high:
                errors.append(f"{where}: replicas {replicas} outside [minReplicas {low}, maxReplicas {high}]")
    return errors


def _start_param_errors(where: str, params) -> list[str]:
    return [
        f"{where}/rayStartParams/{key}: value {value!r} must be a string (quote it)"
        for key, value in (params or {}).items()
        if not isinstance(value, str)
    ]


def file_errors(path: Path) -> list[str]:
    """Errors of every definition in a YAML file, each prefixed with the file and document."""
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document]
    errors = []
    for number, document in enumerate(documents):
        if "apiVersion" in document:
            if not str(document["apiVersion"]).startswith("ray.io/"):
                continue  # a plain Kubernetes object (storage, MLflow server)
            found = kuberay_errors(document)
        else:
            found = launcher_errors(document)
        label = f"{path}" + (f" (document {number + 1})" if len(documents) > 1 else "")
        errors += [f"{label}: {error}" for error in found]
    return errors


def definitions() -> list[Path]:
    """Every cluster definition in cluster/."""
    return sorted(CLUSTER_DIR.glob("*.yaml")) + sorted((CLUSTER_DIR / "kuberay").glob("*.yaml"))


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # prepare_config's notes on filled-in defaults
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)] or definitions()
    try:
        errors = [error for path in paths for error in file_errors(path)]
    except (AssetError, OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(paths)} files, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
