"""Shared readers of deployment/ and terraform/ for the deployment tests (no cluster, no network).

Kubernetes objects are validated against the schemas that ``kubernetes-validate`` bundles;
custom resources (Argo CD, Argo Rollouts, External Secrets), which those schemas do not
cover, against the small JSON schemas in ``tests/data/crd_schemas`` written from the fields
their projects document as required. Kustomize overlays are rendered with ``kubectl kustomize``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "deployment"
K8S = DEPLOYMENT / "k8s"
OVERLAYS = ("dev", "stage", "prod", "prod-canary")
ENVIRONMENTS = ("dev", "stage", "prod")
TERRAFORM = REPO / "terraform"
CRD_SCHEMAS = REPO / "tests" / "data" / "crd_schemas"
# The managed cluster's version (terraform kube_version); the schemas of that release are used.
KUBERNETES_VERSION = "1.32.0"

Manifest = dict[str, Any]


def yaml_documents(path: Path) -> list[Manifest]:
    """The non-empty YAML documents of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kubectl() -> str | None:
    """The kubectl binary (kustomize is built in), or None."""
    return shutil.which("kubectl")


@cache
def render(kustomization: str) -> tuple[Manifest, ...]:
    """``kubectl kustomize deployment/k8s/<kustomization>`` as parsed objects."""
    binary = kubectl()
    if binary is None:
        raise RuntimeError("kubectl is not installed")
    out = subprocess.run(
        [binary, "kustomize", str(K8S / kustomization)], check=False, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {kustomization} failed: {out.stderr.strip()}")
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def overlay(env: str) -> tuple[Manifest, ...]:
    """The rendered overlay of an environment (prod's canary overlay for prod)."""
    return render(f"overlays/{env}")


def find(
    objects: tuple[Manifest, ...] | list[Manifest],
    kind: str,
    name: str,
    namespace: str | None = None,
) -> Manifest:
    """The one object of ``kind`` and ``name`` (and ``namespace`` when given)."""
    hits = [
        o for o in objects
        if o["kind"] == kind and o["metadata"]["name"] == name
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]  # fmt: skip
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def crd_schema_path(manifest: Manifest) -> Path:
    """Where the JSON schema of a custom resource's apiVersion and kind lives."""
    return CRD_SCHEMAS / f"{manifest['apiVersion'].replace('/', '_')}_{manifest['kind']}.json"


@cache
def _crd_schema(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def validate(manifest: Manifest) -> str:
    """Validate one object; returns which schema did it ("kubernetes" or "crd:<file>").

    Raises ``jsonschema.ValidationError`` (kubernetes-validate's error is a subclass) when the
    object does not conform, and ``LookupError`` when no schema is known for its kind.
    """
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return "kubernetes"
    except kubernetes_validate.SchemaNotFoundError:
        path = crd_schema_path(manifest)
        if not path.exists():
            raise LookupError(
                f"no schema for {manifest['apiVersion']} {manifest['kind']}"
            ) from None
        jsonschema.validate(manifest, _crd_schema(path), cls=jsonschema.Draft202012Validator)
        return f"crd:{path.name}"


def pod_spec(workload: Manifest) -> Manifest:
    """The pod spec of a Deployment, StatefulSet, Job or Rollout with a template."""
    return workload["spec"]["template"]["spec"]


def walk(node: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every (path, value) of a nested dict/list structure; list items get the segment "[]"."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, (*path, "[]"))
    yield path, node


@cache
def terraform_files() -> dict[str, dict[str, Any]]:
    """Every ``terraform/*.tf`` parsed by python-hcl2, by file name."""
    return {p.name: hcl2.loads(p.read_text()) for p in sorted(TERRAFORM.glob("*.tf"))}


def terraform_blocks(block: str) -> list[dict[str, Any]]:
    """All blocks of one type (``resource``, ``variable``, ``output``...) across the files."""
    return [entry for parsed in terraform_files().values() for entry in parsed.get(block, [])]


def terraform_resource(kind: str, name: str) -> dict[str, Any]:
    """The body of ``resource "<kind>" "<name>"``."""
    for entry in map(unquote_keys, terraform_blocks("resource")):
        if kind in entry and name in unquote_keys(entry[kind]):
            return unquote_keys(entry[kind])[name]
    raise KeyError(f"resource {kind}.{name}")


def unquote(value: object) -> object:
    """python-hcl2 keeps string literals quoted (``'"x"'``): the literal's value."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def unquote_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """A mapping whose quoted keys (``'"nvidia.com/gpu"'``) are unquoted."""
    return {str(unquote(k)): v for k, v in mapping.items()}


def literal(value: object) -> object:
    """An HCL literal as plain Python: strings unquoted, lists and maps recursively."""
    if isinstance(value, dict):
        return {
            str(unquote(k)): literal(v) for k, v in value.items() if not str(k).startswith("__")
        }
    if isinstance(value, list):
        return [literal(v) for v in value]
    return unquote(value)


@cache
def tfvars(env: str) -> dict[str, Any]:
    """``terraform/envs/<env>.tfvars`` as plain values."""
    return literal(hcl2.loads((TERRAFORM / "envs" / f"{env}.tfvars").read_text()))


def variable_default(name: str) -> object:
    """The default of ``variable "<name>"``."""
    for entry in terraform_blocks("variable"):
        if name in unquote_keys(entry):
            return literal(unquote_keys(entry)[name].get("default"))
    raise KeyError(f"variable {name}")


def gpu_pool() -> dict:
    """Labels, taints and autoscaling of the terraform GPU node pool."""
    pool = literal(terraform_resource("ovh_cloud_project_kube_nodepool", "gpu"))
    return {
        "labels": pool["template"][0]["metadata"][0]["labels"],
        "taints": pool["template"][0]["spec"][0]["taints"],
        "autoscale": pool["autoscale"],
    }


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Kubernetes' rule: a toleration matches a taint by key, effect, and value unless Exists."""
    for t in tolerations:
        key_ok = t.get("key") == taint["key"] or (
            not t.get("key") and t.get("operator") == "Exists"
        )
        effect_ok = not t.get("effect") or t["effect"] == taint["effect"]
        value_ok = t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", "")
        if key_ok and effect_ok and value_ok:
            return True
    return False
