"""Helm values of the official Dagster chart (deployment/helm/): documented keys, the same
instance as deployment/dagster/dagster.yaml, the code location of workspace.yaml, and the
step pods that the run launcher they configure would start (GPU steps on the GPU pool).

There is no helm binary offline: the chart's documented value keys (1.13, from its values
schema: helm/dagster/schema/schema/charts/dagster/subschema/*.py and the
dagster-user-deployments subchart's values.yaml) are written down below, and the part of the
chart's instance template that the run launcher and storage come from
(templates/helpers/instance/_run-launcher.tpl, _postgresql.tpl, _compute-log-manager.tpl,
_concurrency.tpl) is mirrored by ``chart_instance``; dagster itself then loads and checks it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dbt_assets.k8s import GPU_STEP_TAGS
from tests.support import deployment as dep
from tests.test_k8s import gpu_resources, render_step_job

HELM = dep.DEPLOYMENT / "helm"
VALUES_FILES = sorted(HELM.glob("dagster-values*.yaml"))
INSTANCE_YAML = dep.DEPLOYMENT / "dagster" / "dagster.yaml"
RELEASE = "dagster"  # helm.releaseName of the Argo CD Applications
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default

# Documented value keys of the chart. "[]" is a list item; a trailing ".*" is a free-form
# subtree (Kubernetes objects, label maps, free dicts of the schema).
_K8S_POD = (
    "annotations.*",
    "nodeSelector.*",
    "affinity.*",
    "tolerations.*",
    "podSecurityContext.*",
    "securityContext.*",
    "resources.*",
    "livenessProbe.*",
    "readinessProbe.*",
    "startupProbe.*",
    "labels.*",
    "volumeMounts.*",
    "volumes.*",
    "schedulerName",
    "env.*",
    "envConfigMaps.[].name",
    "envSecrets.[].name",
)
CHART_KEYS: frozenset[str] = frozenset(
    {
        "global.postgresqlSecretName",
        "global.dagsterHome",
        "global.serviceAccountName",
        "global.celeryConfigSecretName",
        "global.dagsterInstanceConfigMap",
        "serviceAccount.create",
        "serviceAccount.name",
        "serviceAccount.annotations.*",
        "generatePostgresqlPasswordSecret",
        "generateCeleryConfigSecret",
        "imagePullSecrets.*",
        "postgresql.enabled",
        "postgresql.image.*",
        "postgresql.postgresqlHost",
        "postgresql.postgresqlUsername",
        "postgresql.postgresqlPassword",
        "postgresql.postgresqlDatabase",
        "postgresql.postgresqlParams.*",
        "postgresql.postgresqlScheme",
        "postgresql.service.port",
        "dagster-user-deployments.enabled",
        "dagster-user-deployments.enableSubchart",
        "dagster-user-deployments.imagePullSecrets.*",
        *(
            f"dagster-user-deployments.deployments.[].{k}"
            for k in (
                "name",
                "image.repository",
                "image.tag",
                "image.pullPolicy",
                "dagsterApiGrpcArgs.[]",
                "codeServerArgs.[]",
                "includeConfigInLaunchedRuns.enabled",
                "port",
                "initContainers.*",
                "sidecarContainers.*",
                "service.annotations.*",
                *_K8S_POD,
            )
        ),
        *(
            f"dagsterWebserver.{k}"
            for k in (
                "replicaCount",
                "image.*",
                "nameOverride",
                "pathPrefix",
                "service.*",
                "workspace.enabled",
                "workspace.servers.*",
                "workspace.externalConfigmap",
                "deploymentLabels.*",
                "enableReadOnly",
                "dbStatementTimeout",
                "dbPoolRecycle",
                "logLevel",
                *_K8S_POD,
            )
        ),
        *(
            f"dagsterDaemon.{k}"
            for k in (
                "enabled",
                "image.*",
                "heartbeatTolerance",
                "deploymentLabels.*",
                "runCoordinator.enabled",
                "runCoordinator.type",
                "runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns",
                "runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits.*",
                "runCoordinator.config.queuedRunCoordinator.dequeueIntervalSeconds",
                "runCoordinator.config.queuedRunCoordinator.dequeueNumWorkers",
                "runCoordinator.config.queuedRunCoordinator.dequeueUseThreads",
                "runCoordinator.config.customRunCoordinator.*",
                "runMonitoring.enabled",
                "runMonitoring.startTimeoutSeconds",
                "runMonitoring.cancelTimeoutSeconds",
                "runMonitoring.maxResumeRunAttempts",
                "runMonitoring.pollIntervalSeconds",
                "runMonitoring.freeSlotsAfterRunEndSeconds",
                "runRetries.enabled",
                "runRetries.maxRetries",
                "sensors.useThreads",
                "sensors.numWorkers",
                "sensors.numSubmitWorkers",
                "schedules.useThreads",
                "schedules.numWorkers",
                "schedules.numSubmitWorkers",
                *_K8S_POD,
            )
        ),
        "runLauncher.type",
        "runLauncher.config.celeryK8sRunLauncher.*",
        "runLauncher.config.customRunLauncher.*",
        *(
            f"runLauncher.config.k8sRunLauncher.{k}"
            for k in (
                "image.*",
                "imagePullPolicy",
                "jobNamespace",
                "loadInclusterConfig",
                "kubeconfigFile",
                "envConfigMaps.[].name",
                "envSecrets.[].name",
                "envVars.[]",
                "volumeMounts.*",
                "volumes.*",
                "labels.*",
                "failPodOnRunFailure",
                "resources.*",
                "schedulerName",
                "securityContext.*",
                "runK8sConfig.containerConfig.*",
                "runK8sConfig.podSpecConfig.*",
                "runK8sConfig.podTemplateSpecMetadata.*",
                "runK8sConfig.jobSpecConfig.*",
                "runK8sConfig.jobMetadata.*",
            )
        ),
        "computeLogManager.type",
        "computeLogManager.config.azureBlobComputeLogManager.*",
        "computeLogManager.config.gcsComputeLogManager.*",
        "computeLogManager.config.customComputeLogManager.*",
        *(
            f"computeLogManager.config.s3ComputeLogManager.{k}"
            for k in (
                "bucket",
                "localDir",
                "prefix",
                "useSsl",
                "verify",
                "verifyCertPath",
                "endpointUrl",
                "skipEmptyFiles",
                "uploadInterval",
                "uploadExtraArgs.*",
                "showUrlOnly",
                "region",
            )
        ),
        "concurrency.enabled",
        "concurrency.pools.defaultLimit",
        "concurrency.pools.granularity",
        "concurrency.pools.opGranularityRunBuffer",
        "concurrency.runs.maxConcurrentRuns",
        "concurrency.runs.tagConcurrencyLimits.*",
        "telemetry.enabled",
        "retention.*",
        "pythonLogs.*",
        "scheduler.*",
        "ingress.*",
        "migrate.*",
        "busybox.*",
        "rabbitmq.*",
        "redis.*",
        "flower.*",
        "additionalInstanceConfig.*",
    }
)
ENUMS = {
    "runLauncher.type": {"K8sRunLauncher", "CeleryK8sRunLauncher", "CustomRunLauncher"},
    "computeLogManager.type": {
        "NoOpComputeLogManager",
        "AzureBlobComputeLogManager",
        "GCSComputeLogManager",
        "S3ComputeLogManager",
        "CustomComputeLogManager",
    },
    "dagsterDaemon.runCoordinator.type": {"QueuedRunCoordinator", "CustomRunCoordinator"},
}


def values(name: str = "dagster-values.yaml") -> dict:
    """One values file of deployment/helm."""
    return yaml.safe_load((HELM / name).read_text())


def merged(env: str) -> dict:
    """Shared values overlaid with an environment's file, as Helm merges maps (lists replace)."""

    def merge(base: dict, top: dict) -> dict:
        out = dict(base)
        for key, value in top.items():
            out[key] = (
                merge(out[key], value)
                if isinstance(value, dict) and isinstance(out.get(key), dict)
                else value
            )
        return out

    return merge(values(), values(f"dagster-values-{env}.yaml"))


def documented(path: str) -> bool:
    """Whether a dotted key path is a documented chart key (or inside a free-form one)."""
    if path in CHART_KEYS:
        return True
    parts = path.split(".")
    return any(".".join(parts[:i]) + ".*" in CHART_KEYS for i in range(1, len(parts)))


def test_documented_key_rule() -> None:
    assert documented("dagsterDaemon.nodeSelector.tomosight.io/pool")
    assert documented("dagster-user-deployments.deployments.[].envSecrets.[].name")
    assert not documented("dagster-user-deployments.deployments.[].gpu")
    assert not documented("runLauncher.config.k8sRunLauncher.runK8sConfig.stepConfig.x")
    assert not documented("dagit.replicaCount"), "the pre-1.3 name of the webserver is gone"


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_values_use_only_documented_chart_keys(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    leaves = [".".join(p) for p, v in dep.walk(data) if p and not isinstance(v, (dict, list))]
    leaves += [".".join(p) for p, v in dep.walk(data) if p and v in ({}, [])]
    assert leaves
    unknown = [leaf for leaf in leaves if not documented(leaf)]
    assert not unknown, unknown
    for key, allowed in ENUMS.items():
        node = data
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        assert node == {} or node in allowed, (key, node)


def test_values_respect_the_chart_rules() -> None:
    data = values()
    # The chart fails when both places set the run limit
    # (templates/helpers/instance/_concurrency.tpl).
    queued = (
        data["dagsterDaemon"]["runCoordinator"].get("config", {}).get("queuedRunCoordinator", {})
    )
    assert not (
        "maxConcurrentRuns" in queued and "maxConcurrentRuns" in data["concurrency"].get("runs", {})
    )
    # An external database needs its host and a Secret the chart does not generate.
    assert data["postgresql"]["enabled"] is False and data["postgresql"]["postgresqlHost"]
    assert data["generatePostgresqlPasswordSecret"] is False
    assert data["dagster-user-deployments"]["enabled"] is True
    assert data["runLauncher"]["type"] == "K8sRunLauncher"
    assert data["computeLogManager"]["type"] == "S3ComputeLogManager"


def chart_instance(data: dict) -> dict:
    """The dagster.yaml the chart renders from ``data`` (the parts this deployment sets)."""
    k8s = data["runLauncher"]["config"]["k8sRunLauncher"]
    pg = data["postgresql"]
    postgres = {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg.get("postgresqlParams", {}),
            "scheme": pg["postgresqlScheme"],
        }
    }
    snake = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    logs = data["computeLogManager"]["config"]["s3ComputeLogManager"]
    pools, runs = data["concurrency"]["pools"], data["concurrency"]["runs"]
    return {
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "load_incluster_config": k8s["loadInclusterConfig"],
                "job_namespace": k8s["jobNamespace"],
                "image_pull_policy": k8s["imagePullPolicy"],
                "service_account_name": data["global"]["serviceAccountName"],
                "dagster_home": DAGSTER_HOME,
                "instance_config_map": f"{RELEASE}-instance",
                "postgres_password_secret": data["global"]["postgresqlSecretName"],
                "env_config_maps": [c["name"] for c in k8s["envConfigMaps"]],
                "env_secrets": [s["name"] for s in k8s["envSecrets"]],
                "run_k8s_config": {snake[k]: v for k, v in k8s["runK8sConfig"].items()},
            },
        },
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": postgres,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": postgres,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": postgres,
        },
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": {
                "bucket": logs["bucket"],
                "prefix": logs["prefix"],
                "verify": True,
                "endpoint_url": logs["endpointUrl"],
                "region": logs["region"],
                "upload_interval": logs["uploadInterval"],
            },
        },
        "concurrency": {
            "pools": {"default_limit": pools["defaultLimit"]},
            "runs": {"max_concurrent_runs": runs["maxConcurrentRuns"]},
        },
        "telemetry": {"enabled": data["telemetry"]["enabled"]},
    }


def test_chart_renders_the_instance_of_deployment_dagster_yaml() -> None:
    ours = yaml.safe_load(INSTANCE_YAML.read_text())
    chart = chart_instance(values())
    assert chart["run_launcher"]["class"] == ours["run_launcher"]["class"]
    for key in (
        "job_namespace",
        "service_account_name",
        "instance_config_map",
        "postgres_password_secret",
        "env_config_maps",
        "env_secrets",
    ):
        assert chart["run_launcher"]["config"][key] == ours["run_launcher"]["config"][key], key
    assert (
        chart["run_storage"]["config"]["postgres_db"]["scheme"]
        == ours["storage"]["postgres"]["postgres_db"]["scheme"]
    )
    assert chart["concurrency"] == ours["concurrency"]
    assert chart["telemetry"] == ours["telemetry"]
    deployment = values()["dagster-user-deployments"]["deployments"][0]
    assert (
        deployment["envConfigMaps"]
        == values()["runLauncher"]["config"]["k8sRunLauncher"]["envConfigMaps"]
    )
    assert (
        deployment["envSecrets"]
        == values()["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    )


def test_code_location_is_the_one_of_workspace_yaml() -> None:
    from dagster._cli.api import grpc_command

    (location,) = yaml.safe_load((dep.REPO / "workspace.yaml").read_text())["load_from"]
    module = location["python_module"]
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    params = grpc_command.make_context("grpc", list(deployment["dagsterApiGrpcArgs"])).params
    assert (params["module_name"], params["attribute"], params["location_name"]) == (
        module["module_name"],
        module["attribute"],
        module["location_name"],
    )
    assert deployment["image"]["repository"].endswith("/tomosight-dagster")
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(deployment["image"]["tag"]))


@pytest.fixture(scope="module")
def chart_launcher(tmp_path_factory: pytest.TempPathFactory):
    """The K8sRunLauncher of the instance the chart renders from the prod values."""
    import dagster_k8s.launcher
    from dagster._core.instance.ref import InstanceRef

    home = tmp_path_factory.mktemp("chart-dagster-home")
    (home / "dagster.yaml").write_text(yaml.safe_dump(chart_instance(merged("prod"))))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dagster_k8s.launcher, "load_kubernetes_config", lambda **_: None)
        patch.setenv("DAGSTER_PG_PASSWORD", "unused")
        ref = InstanceRef.from_dir(str(home))
        launcher = ref.run_launcher
    assert isinstance(launcher, dagster_k8s.K8sRunLauncher)
    return launcher


@pytest.fixture(scope="module")
def production_defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    """The production code location as the overlays configure it (nothing is contacted)."""
    from dbt_assets.definitions import build_definitions
    from dbt_assets.settings import load_settings

    if dep.kubectl() is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    env = dict(dep.find(dep.overlay("prod"), "ConfigMap", "tomosight-env", "tomosight")["data"])
    env["TOMOSIGHT_HOME"] = str(tmp_path_factory.mktemp("prod-home"))
    return build_definitions(load_settings(env))


def test_training_step_pod_asks_for_a_gpu_node_and_tolerates_its_taint(
    chart_launcher, production_defs
) -> None:
    from kubernetes.client import ApiClient

    job = render_step_job(production_defs, chart_launcher, "training_job", "model")
    manifest = json.loads(json.dumps(ApiClient().sanitize_for_serialization(job)))
    assert dep.validate(manifest) == "kubernetes"
    pod = manifest["spec"]["template"]["spec"]
    assert gpu_resources(job) == ("1", "1")
    pool = dep.gpu_pool()
    for taint in pool["taints"]:
        assert dep.tolerates(pod["tolerations"], taint)
    assert (
        pod["nodeSelector"]
        == GPU_STEP_TAGS["dagster-k8s/config"]["pod_spec_config"]["node_selector"]
    )
    assert set(pod["nodeSelector"]) <= set(pool["labels"])
    # The chart's run_k8s_config (non-root, seccomp) survives the merge with the op tags.
    run_security = values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"][
        "podSpecConfig"
    ]["securityContext"]
    assert pod["securityContext"] == run_security
    container = pod["containers"][0]
    assert {"tomosight-env"} == {
        e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e
    }
    # A CPU step of the same run neither asks for a GPU nor tolerates the GPU pool's taint.
    cpu_job = render_step_job(production_defs, chart_launcher, "per_study_job", "ingest")
    cpu_pod = json.loads(json.dumps(ApiClient().sanitize_for_serialization(cpu_job)))["spec"][
        "template"
    ]["spec"]
    assert gpu_resources(cpu_job) == (None, None)
    assert not any(
        dep.tolerates(cpu_pod.get("tolerations") or [], taint) for taint in pool["taints"]
    )
    assert (
        dep.validate(json.loads(json.dumps(ApiClient().sanitize_for_serialization(cpu_job))))
        == "kubernetes"
    )
