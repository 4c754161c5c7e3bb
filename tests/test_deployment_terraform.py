"""terraform/: parses (python-hcl2), is formatted, passes checkov, and agrees with the manifests.

checkov has no built-in OVHcloud checks, so the project's own policies
(``terraform/policies``, with severities) are what it enforces; it runs once per module, offline
(``--skip-download``, ``BC_SKIP_MAPPING``), from the separate ``.venv-checkov`` that
``make checkov`` creates, over a copy of terraform/ next to a deliberately insecure
configuration that every policy must fail (so that a policy that cannot fail is noticed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest
import yaml

from dbt_assets.k8s import GPU_STEP_TAGS
from tests.support import deployment as dep

CHECKOV = Path(os.environ.get("CHECKOV", dep.REPO / ".venv-checkov" / "bin" / "checkov"))
POLICIES = dep.TERRAFORM / "policies"
INSECURE = dep.REPO / "tests" / "data" / "terraform_insecure"
GPU_TOLERATIONS = GPU_STEP_TAGS["dagster-k8s/config"]["pod_spec_config"]["tolerations"]


def test_every_terraform_file_parses() -> None:
    files = [
        *dep.TERRAFORM.glob("*.tf"),
        *dep.TERRAFORM.glob("envs/*.tfvars"),
        *dep.TERRAFORM.glob("backend/*.tfbackend"),
    ]
    assert len(files) >= 13
    for path in files:
        assert hcl2.loads(path.read_text()) is not None, path
    kinds = {kind for entry in dep.terraform_blocks("resource") for kind in dep.unquote_keys(entry)}
    assert {
        "ovh_cloud_project_kube",
        "ovh_cloud_project_kube_nodepool",
        "ovh_cloud_project_storage",
        "ovh_cloud_project_database",
        "ovh_cloud_project_network_private",
        "ovh_vrack_cloudproject",
    } <= kinds


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_terraform_is_formatted() -> None:
    out = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(dep.TERRAFORM)],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """One offline checkov run over terraform/ and the insecure fixture; results by folder."""
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} not found: run `make checkov`")
    root = tmp_path_factory.mktemp("checkov")
    shutil.copytree(
        dep.TERRAFORM, root / "terraform", ignore=shutil.ignore_patterns("policies", ".terraform*")
    )
    shutil.copytree(INSECURE, root / "insecure")
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        "LOG_LEVEL": "WARNING",
    }
    out = subprocess.run(
        [str(CHECKOV), "--directory", str(root), "--framework", "terraform", "--external-checks-dir",
         str(POLICIES), "--skip-download", "--output", "json", "--compact"],
        check=False, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["summary"]["parsing_errors"] == 0
    results: dict[str, list[dict]] = {"terraform": [], "insecure": []}
    for state in ("passed_checks", "failed_checks", "skipped_checks"):
        for check in report["results"][state]:
            folder = check["file_path"].strip("/").split("/")[0]
            results[folder].append({**check, "state": state})
    return results


def policy_ids() -> set[str]:
    return {yaml.safe_load(p.read_text())["metadata"]["id"] for p in POLICIES.glob("*.yaml")}


def test_checkov_finds_no_failed_check(checkov_results) -> None:
    checks = checkov_results["terraform"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c.get('severity')})"
        for c in checks
        if c["state"] == "failed_checks"
    ]
    assert not failed, failed
    # Every skip carries its reason inline (#checkov:skip=ID:reason).
    for skipped in (c for c in checks if c["state"] == "skipped_checks"):
        assert skipped["check_result"].get("suppress_comment", "").strip(), skipped["check_id"]
    assert {c["check_id"] for c in checks if c["state"] == "passed_checks"} == policy_ids()


def test_every_checkov_policy_fails_on_insecure_terraform(checkov_results) -> None:
    failed = {c["check_id"] for c in checkov_results["insecure"] if c["state"] == "failed_checks"}
    assert failed == policy_ids()
    severities = {c["check_id"]: c.get("severity") for c in checkov_results["insecure"]}
    assert {"HIGH", "CRITICAL"} <= set(severities.values())


# -- the GPU node pool and the pods that must land on it --


def test_tolerance_rule_itself() -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert dep.tolerates(
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], taint
    )
    assert dep.tolerates(
        [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}], taint
    )
    assert not dep.tolerates(
        [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true"}], taint
    )
    assert not dep.tolerates(
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], taint
    )
    assert not dep.tolerates([{"key": "gpu", "operator": "Exists"}], taint)


def test_gpu_steps_and_api_pods_tolerate_the_gpu_pool_taints() -> None:
    pool = dep.gpu_pool()
    assert pool["taints"] and pool["autoscale"] is True
    for taint in pool["taints"]:
        assert taint["effect"] in ("NoSchedule", "NoExecute"), "the pool must keep other pods away"
        assert dep.tolerates(GPU_TOLERATIONS, taint), taint
    serving = dep.yaml_documents(dep.K8S / "base" / "serving" / "deployment.yaml")[1]
    spec = dep.pod_spec(serving)
    for taint in pool["taints"]:
        assert dep.tolerates(spec["tolerations"], taint)
    assert spec["nodeSelector"].items() <= pool["labels"].items()
    # The step pods select the GPU product label, which the pool carries (var.gpu_product).
    selector = GPU_STEP_TAGS["dagster-k8s/config"]["pod_spec_config"]["node_selector"]
    assert set(selector) <= set(pool["labels"])
    assert pool["labels"]["nvidia.com/gpu.product"] == "${var.gpu_product}"
    # Pods without the toleration (every CPU step, MLflow, Orthanc) cannot land on the GPU pool,
    # and the CPU pool has no taint to keep them away.
    cpu = dep.literal(dep.terraform_resource("ovh_cloud_project_kube_nodepool", "cpu"))
    assert cpu["template"][0]["spec"][0]["taints"] == []


def test_gpu_product_setting_reaches_the_step_node_selector() -> None:
    code = (
        "from dbt_assets.k8s import GPU_STEP_TAGS as t; "
        "print(t['dagster-k8s/config']['pod_spec_config']['node_selector'])"
    )
    for env in dep.ENVIRONMENTS:
        product = dep.tfvars(env)["gpu_product"]
        out = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=dep.REPO,
            env={**os.environ, "TOMOSIGHT_GPU_PRODUCT": product},
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == repr({"nvidia.com/gpu.product": product})


@pytest.mark.skipif(dep.kubectl() is None, reason="kubectl (with kustomize) is not installed")
@pytest.mark.parametrize("env", dep.ENVIRONMENTS)
def test_overlay_agrees_with_its_tfvars(env) -> None:
    tfvars = dep.tfvars(env)
    objects = dep.overlay("prod-canary" if env == "prod" else env)
    buckets = {role: f"{tfvars['name_prefix']}-{role}" for role in ("raw", "processed", "mlflow")}
    endpoint = f"https://s3.{tfvars['storage_region'].lower()}.io.cloud.ovh.net"
    training = dep.find(objects, "ConfigMap", "tomosight-env", "tomosight")["data"]
    serving = dep.find(objects, "ConfigMap", "tomosight-serving-env", "tomosight-serving")["data"]
    mlflow = dep.find(objects, "ConfigMap", "mlflow-env", "tomosight")["data"]
    assert (
        training["TOMOSIGHT_STORE_URI"]
        == serving["TOMOSIGHT_STORE_URI"]
        == f"s3://{buckets['processed']}/store"
    )
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"] == f"s3://{buckets['mlflow']}/artifacts"
    assert (
        training["AWS_ENDPOINT_URL"]
        == serving["AWS_ENDPOINT_URL"]
        == mlflow["MLFLOW_S3_ENDPOINT_URL"]
        == endpoint
    )
    assert training["TOMOSIGHT_GPU_PRODUCT"] == tfvars["gpu_product"]
    egress = dep.find(objects, "NetworkPolicy", "egress-postgresql", "tomosight")
    assert egress["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": tfvars["subnet_cidr"]}}]
    store = dep.find(objects, "ClusterSecretStore", "vault")
    assert store["spec"]["provider"]["vault"]["path"] == f"tomosight-{env}"
    values = yaml.safe_load((dep.DEPLOYMENT / "helm" / f"dagster-values-{env}.yaml").read_text())
    logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert (logs["bucket"], logs["endpointUrl"]) == (buckets["processed"], endpoint)
    # What scales where: the GPU pool holds the API's replicas (one GPU each) plus one GPU step
    # at a time (Dagster pool "gpu", limit 1).
    hpa = dep.find(objects, "HorizontalPodAutoscaler", "tomosight-serving")["spec"]
    assert hpa["minReplicas"] <= tfvars["gpu_min_nodes"]
    assert hpa["maxReplicas"] + 1 <= tfvars["gpu_max_nodes"]


def test_variables_are_declared_and_nothing_secret_is_in_the_code() -> None:
    declared = {
        name for entry in dep.terraform_blocks("variable") for name in dep.unquote_keys(entry)
    }
    without_default = {
        name for entry in dep.terraform_blocks("variable")
        for name, body in dep.unquote_keys(entry).items() if "default" not in body
    }  # fmt: skip
    for env in dep.ENVIRONMENTS:
        tfvars = dep.tfvars(env)
        assert set(tfvars) <= declared, set(tfvars) - declared
        # Account identifiers come from the command line or TF_VAR_*, everything else from the file.
        assert without_default - set(tfvars) == {"project_id", "vrack_id"}
    assert not [name for name in declared if re.search(r"password|secret|token|_key$", name)]
    provider = dep.unquote_keys(dep.terraform_files()["versions.tf"]["provider"][0])["ovh"]
    assert set(provider) - {"__is_block__"} == {"endpoint"}, (
        "OVH credentials come from the environment"
    )
    for entry in dep.terraform_blocks("output"):
        for name, body in dep.unquote_keys(entry).items():
            if re.search(r"password|secret|kubeconfig", name):
                assert body.get("sensitive") is True, name
    code = [p for p in dep.TERRAFORM.rglob("*") if p.suffix in (".tf", ".tfvars", ".tfbackend")]
    text = "\n".join(p.read_text() for p in code)
    assert not re.search(r"(?i)(password|secret|token)\s*=\s*\"[^\"$]", text), "a literal secret"
    keylike = [
        token for token in re.findall(r"[A-Za-z0-9+/]{24,}={0,2}", text)
        if re.search(r"[A-Z]", token) and re.search(r"[a-z]", token) and re.search(r"\d", token)
    ]  # fmt: skip
    assert not keylike, f"something that looks like a key: {keylike}"


def test_state_is_remote_on_ovh_object_storage() -> None:
    backend = dep.unquote_keys(dep.terraform_files()["versions.tf"]["terraform"][0]["backend"][0])
    assert set(backend) == {"s3"}, "a partial S3 backend, filled per environment"
    keys = set()
    for env in dep.ENVIRONMENTS:
        config = dep.literal(
            hcl2.loads((dep.TERRAFORM / "backend" / f"{env}.s3.tfbackend").read_text())
        )
        assert re.fullmatch(r"https://s3\.[a-z-]+\.io\.cloud\.ovh\.net", config["endpoints"]["s3"])
        assert config["use_path_style"] is True and not any(
            "secret" in k or "access" in k for k in config
        )
        keys.add(config["key"])
    assert len(keys) == len(dep.ENVIRONMENTS), "one state per environment"
