"""The Kubernetes Jobs dagster-k8s would launch for the steps of the production code location.

Each step is rendered the way ``k8s_job_executor`` does it (run launcher of
``deployment/dagster/dagster.yaml``, then the step's op tags, then
``construct_dagster_k8s_job``), without a cluster: only the launcher's kube-config loading
is skipped. The training and scoring steps must ask for one GPU on a GPU node; every other
step must not.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dbt_assets.definitions import build_definitions
from dbt_assets.k8s import GPU_PRODUCT, GPU_STEP_TAGS
from dbt_assets.settings import load_settings

INSTANCE_YAML = Path(__file__).resolve().parents[1] / "deployment" / "dagster" / "dagster.yaml"
IMAGE = "registry.invalid/tomosight:test"
GPU = "nvidia.com/gpu"
GPU_STEPS = {("training_job", "model"), ("scoring_job", "score")}
JOBS = ("per_study_job", "training_job", "scoring_job", "reports_job")


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    """The production code location (nothing is contacted while building it)."""
    home = tmp_path_factory.mktemp("k8s-home")
    env = {
        "TOMOSIGHT_PROFILE": "production",
        "TOMOSIGHT_HOME": str(home),
        "TOMOSIGHT_SOURCE_URI": str(home / "landing"),
        "TOMOSIGHT_STORE_URI": "s3://tomosight-test/store",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/mlflow",
    }
    return build_definitions(load_settings(env))


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The ``K8sRunLauncher`` that ``deployment/dagster/dagster.yaml`` configures."""
    import dagster_k8s.launcher
    from dagster._core.instance.ref import InstanceRef

    home = tmp_path_factory.mktemp("k8s-dagster-home")
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dagster_k8s.launcher, "load_kubernetes_config", lambda **_: None)
        for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
            patch.setenv(name, "unused")
        patch.setenv("DAGSTER_PG_PORT", "5432")
        run_launcher = InstanceRef.from_dir(str(home)).run_launcher
    assert isinstance(run_launcher, dagster_k8s.K8sRunLauncher)
    yield run_launcher


def step_tags(defs: dg.Definitions, job_name: str, op_name: str) -> dict[str, str]:
    """The tags the executor reads for a step: those of the job's node."""
    return dict(defs.resolve_job_def(job_name).graph.node_named(op_name).tags)


def render_step_job(defs: dg.Definitions, launcher: object, job_name: str, op_name: str):
    """The ``V1Job`` of one step, built as ``K8sStepHandler.launch_step`` builds it."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

    run = dg.DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()))
    op_config = get_user_defined_k8s_config(step_tags(defs, job_name, op_name))
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False).merge(
        K8sContainerContext(run_k8s_config=op_config)
    )
    name = f"dagster-step-{get_k8s_job_name(run.run_id, op_name)}"
    return construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, launcher),
        args=["dagster", "api", "execute_step"],
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": job_name, "dagster/op": op_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": op_name}],
    )


def gpu_resources(job) -> tuple[str | None, str | None]:
    """The step container's GPU request and limit (None when absent)."""
    resources = job.spec.template.spec.containers[0].resources
    requests = (resources.requests if resources else None) or {}
    limits = (resources.limits if resources else None) or {}
    return requests.get(GPU), limits.get(GPU)


@pytest.mark.parametrize(("job_name", "op_name"), sorted(GPU_STEPS))
def test_gpu_step_pod_asks_for_one_gpu_on_a_gpu_node(
    defs: dg.Definitions, launcher: object, job_name: str, op_name: str
) -> None:
    from kubernetes.client import ApiClient

    job = render_step_job(defs, launcher, job_name, op_name)
    pod = job.spec.template.spec
    assert gpu_resources(job) == ("1", "1")
    wanted = GPU_STEP_TAGS["dagster-k8s/config"]["container_config"]["resources"]
    resources = pod.containers[0].resources
    assert (resources.requests, resources.limits) == (wanted["requests"], wanted["limits"])
    assert pod.node_selector == {"nvidia.com/gpu.product": GPU_PRODUCT}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [(GPU, "Exists", "NoSchedule")]
    assert pod.containers[0].image == IMAGE
    manifest = json.loads(json.dumps(ApiClient().sanitize_for_serialization(job)))
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert len(manifest["metadata"]["name"]) <= 63
    assert manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU] == "1"


def test_only_training_and_scoring_steps_get_a_gpu(defs: dg.Definitions, launcher: object) -> None:
    with_gpu = set()
    for job_name in JOBS:
        for node in defs.resolve_job_def(job_name).graph.nodes:
            job = render_step_job(defs, launcher, job_name, node.name)
            pod = job.spec.template.spec
            if gpu_resources(job) != (None, None):
                with_gpu.add((job_name, node.name))
            else:
                assert not pod.node_selector and not pod.tolerations, (job_name, node.name)
    assert with_gpu == GPU_STEPS
    assert gpu_resources(render_step_job(defs, launcher, "per_study_job", "ingest")) == (None, None)


def test_training_step_takes_a_slot_of_the_gpu_pool(defs: dg.Definitions) -> None:
    assert defs.resolve_assets_def("model").op.pool == "gpu"
    assert "gpu" not in {defs.resolve_assets_def(key).op.pool for key in ("filepaths", "preprocessed")}


def test_step_pod_reaches_the_instance_and_secrets(defs: dg.Definitions, launcher: object) -> None:
    instance_yaml = yaml.safe_load(INSTANCE_YAML.read_text())
    password_env = instance_yaml["storage"]["postgres"]["postgres_db"]["password"]["env"]
    launcher_config = instance_yaml["run_launcher"]["config"]
    pod = render_step_job(defs, launcher, "training_job", "model").spec.template.spec
    container = pod.containers[0]

    # The password the instance yaml reads is the one the launcher injects from its secret.
    injected = {env.name: env.value_from for env in container.env if env.value_from}
    secret_ref = injected[password_env].secret_key_ref
    expected_secret = (launcher_config["postgres_password_secret"], "postgresql-password")
    assert (secret_ref.name, secret_ref.key) == expected_secret
    config_maps = {e.config_map_ref.name for e in container.env_from if e.config_map_ref}
    secrets = {e.secret_ref.name for e in container.env_from if e.secret_ref}
    assert config_maps == set(launcher_config["env_config_maps"])
    assert secrets == set(launcher_config["env_secrets"])
    # Step pods get the instance as a serialised ref in their arguments (its env references
    # unresolved), so they need the variables above, not the mounted file.
    plain = {env.name: env.value for env in container.env if not env.value_from}
    assert plain["DAGSTER_HOME"] == launcher.dagster_home
    assert pod.service_account_name == launcher_config["service_account_name"]
