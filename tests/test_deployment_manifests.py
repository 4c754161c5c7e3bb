"""Kubernetes manifests of deployment/: schemas, secrets, the API's pods, network isolation.

Every manifest file and every rendered Kustomize overlay is validated against the Kubernetes
1.32 schemas bundled with ``kubernetes-validate`` (strict: unknown fields fail). Custom
resources (Argo CD Application/AppProject, Argo Rollouts Rollout, External Secrets
ExternalSecret/ClusterSecretStore) are validated against the JSON schemas in
``tests/data/crd_schemas``, written from the fields their projects document as required;
the Rollout's pods are those of the Deployment it references, which the Kubernetes schemas check.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from tests.support import deployment as dep

pytestmark = pytest.mark.skipif(
    dep.kubectl() is None, reason="kubectl (with kustomize) is not installed"
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet")
NAMESPACES = {"tomosight": "training", "tomosight-serving": "serving", "tomosight-data": "data"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE|_KEY$|CREDENTIAL)", re.IGNORECASE)


def patch_files() -> set[Path]:
    """Files that kustomizations use as patches (partial objects, not manifests)."""
    found = set()
    for kustomization in dep.K8S.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            if "path" in patch:
                found.add((kustomization.parent / patch["path"]).resolve())
    return found


def manifest_files() -> list[Path]:
    """Every complete manifest file: deployment/k8s (minus kustomizations and patches), Argo CD."""
    patches = patch_files()
    files = [
        p for p in sorted(dep.K8S.rglob("*.yaml"))
        if p.name != "kustomization.yaml" and p.resolve() not in patches
    ]  # fmt: skip
    return files + sorted((dep.DEPLOYMENT / "argocd").glob("*.yaml"))


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[dep.Manifest, ...]]:
    """The base and every overlay, rendered once."""
    return {name: dep.render(name) for name in ("base", *(f"overlays/{o}" for o in dep.OVERLAYS))}


def test_every_manifest_and_rendered_overlay_validates(rendered) -> None:
    sources = [(str(p.relative_to(dep.REPO)), dep.yaml_documents(p)) for p in manifest_files()]
    sources += [(f"kubectl kustomize {name}", list(objects)) for name, objects in rendered.items()]
    seen: dict[str, str] = {}
    schemas: dict[str, int] = {}
    for source, documents in sources:
        assert documents, f"{source} holds no object"
        for manifest in documents:
            key = json.dumps(manifest, sort_keys=True)
            if key not in seen:
                where = (
                    f"{source}: {manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
                )
                try:
                    seen[key] = dep.validate(manifest)
                except jsonschema.ValidationError as error:
                    pytest.fail(f"{where}: {error.message} at {list(error.absolute_path)}")
            schemas[seen[key]] = schemas.get(seen[key], 0) + 1
    # Both kinds of schema were exercised, each CRD kind at least once.
    assert schemas["kubernetes"] >= 150
    assert {s for s in schemas if s.startswith("crd:")} == {
        f"crd:{p.name}" for p in dep.CRD_SCHEMAS.glob("*.json")
    }


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("Deployment", lambda m: m["spec"].__setitem__("replicas", "two")),
        ("Deployment", lambda m: dep.pod_spec(m)["containers"][0].__setitem__("gpu", 1)),
        ("HorizontalPodAutoscaler", lambda m: m["spec"].pop("scaleTargetRef")),
        ("NetworkPolicy", lambda m: m["spec"].__setitem__("podSelector", "all")),
        ("ExternalSecret", lambda m: m["spec"].pop("target")),
        ("ExternalSecret", lambda m: m["spec"]["secretStoreRef"].__setitem__("kind", "Vault")),
        ("ClusterSecretStore", lambda m: m["spec"]["provider"]["vault"].pop("auth")),
        (
            "Rollout",
            lambda m: m["spec"]["strategy"]["canary"]["steps"].append(
                {"setWeight": 10, "pause": {}}
            ),
        ),
        ("Rollout", lambda m: m["spec"].__setitem__("template", {})),
        ("Application", lambda m: m["spec"]["destination"].clear()),
    ],
)
def test_schemas_reject_broken_objects(rendered, kind, mutate) -> None:
    objects = rendered["overlays/prod-canary"] + tuple(
        dep.yaml_documents(dep.DEPLOYMENT / "argocd" / "prod.yaml")
    )
    manifest = copy.deepcopy(next(o for o in objects if o["kind"] == kind))
    dep.validate(manifest)
    mutate(manifest)
    with pytest.raises(jsonschema.ValidationError):
        dep.validate(manifest)


def containers(workload: dep.Manifest) -> list[dict]:
    spec = dep.pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def test_no_secret_value_in_any_manifest(rendered) -> None:
    for objects in rendered.values():
        assert not [o for o in objects if o["kind"] == "Secret"], (
            "Secrets come from ExternalSecrets"
        )
        for workload in (o for o in objects if o["kind"] in WORKLOAD_KINDS):
            for container in containers(workload):
                for env in container.get("env", []):
                    if SECRET_NAME.search(env["name"]):
                        assert "value" not in env, f"{env['name']} must come from a Secret"
    for config_map in (o for o in rendered["base"] if o["kind"] == "ConfigMap"):
        secretish = [k for k in config_map["data"] if SECRET_NAME.search(k)]
        assert not secretish, f"{config_map['metadata']['name']} holds {secretish}"


def test_every_referenced_secret_is_made_by_an_external_secret(rendered) -> None:
    for name, objects in rendered.items():
        made = {
            (o["metadata"]["namespace"], o["spec"]["target"]["name"])
            for o in objects if o["kind"] == "ExternalSecret"
        }  # fmt: skip
        for workload in (o for o in objects if o["kind"] in WORKLOAD_KINDS):
            namespace = workload["metadata"]["namespace"]
            for container in containers(workload):
                refs = [
                    e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e
                ]
                refs += [
                    e["valueFrom"]["secretKeyRef"]["name"]
                    for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
                ]  # fmt: skip
                for ref in refs:
                    assert (namespace, ref) in made, (
                        f"{name}: {namespace}/{ref} has no ExternalSecret"
                    )
        for external in (o for o in objects if o["kind"] == "ExternalSecret"):
            store = external["spec"]["secretStoreRef"]
            dep.find(objects, store["kind"], store["name"])


def test_api_pods_are_probed_measured_and_given_a_gpu(rendered) -> None:
    from serving.settings import ServeSettings

    for name, objects in rendered.items():
        api = dep.find(objects, "Deployment", "tomosight-serving", "tomosight-serving")
        (container,) = dep.pod_spec(api)["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["args"] == ["serve", "--port", "8000"] and ports == {"http": 8000}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
            get = container[probe]["httpGet"]
            assert (get["path"], ports[get["port"]]) == (path, 8000), (name, probe)
        annotations = api["spec"]["template"]["metadata"]["annotations"]
        assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
            "8000",
            "/metrics",
        )
        resources = container["resources"]
        assert (
            resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
        )
        env = dep.find(objects, "ConfigMap", "tomosight-serving-env", "tomosight-serving")["data"]
        wanted = {
            "OIDC_ISSUER",
            "OIDC_AUDIENCE",
            "OIDC_JWKS_URL",
            "TOMOSIGHT_PROFILE",
            "TOMOSIGHT_STORE_URI",
            "MLFLOW_TRACKING_URI",
            "TOMOSIGHT_HOME",
        }
        assert wanted <= set(env) and env["TOMOSIGHT_PROFILE"] == "production"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert env["TOMOSIGHT_HOME"] in mounts, "the home folder must be writable (read-only root)"
        # The serving code's own settings parser accepts the pod's environment and command line.
        settings = ServeSettings.from_env(env, port=int(container["args"][-1]))
        assert (settings.host, settings.accelerator) == ("0.0.0.0", "cuda")
        assert settings.devices == int(resources["limits"]["nvidia.com/gpu"])
        ingress = dep.find(objects, "Ingress", "tomosight-serving", "tomosight-serving")
        body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert int(body.removesuffix("m")) << 20 >= settings.max_payload_bytes, (
            "nginx would refuse uploads"
        )
        assert "replicas" not in api["spec"], "the HorizontalPodAutoscaler owns the replica count"


def scale_target(objects, hpa: dep.Manifest) -> dep.Manifest:
    ref = hpa["spec"]["scaleTargetRef"]
    target = dep.find(objects, ref["kind"], ref["name"], hpa["metadata"]["namespace"])
    assert target["apiVersion"] == ref["apiVersion"]
    return target


def test_autoscaler_and_disruption_budget_cover_the_api_pods(rendered) -> None:
    for name, objects in rendered.items():
        hpa = dep.find(objects, "HorizontalPodAutoscaler", "tomosight-serving")
        target = scale_target(objects, hpa)
        expected = "Rollout" if name.endswith("canary") else "Deployment"
        assert target["kind"] == expected, name
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        pod_labels = dep.find(objects, "Deployment", "tomosight-serving")["spec"]["template"][
            "metadata"
        ]["labels"]
        pdb = dep.find(objects, "PodDisruptionBudget", "tomosight-serving")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert (
            pdb["spec"]["maxUnavailable"] < hpa["spec"]["maxReplicas"]
            or hpa["spec"]["maxReplicas"] == 1
        )


def test_canary_rollout_takes_over_the_api_deployment(rendered) -> None:
    objects = rendered["overlays/prod-canary"]
    rollout = dep.find(objects, "Rollout", "tomosight-serving", "tomosight-serving")
    ref = rollout["spec"]["workloadRef"]
    deployment = dep.find(objects, ref["kind"], ref["name"], "tomosight-serving")
    assert rollout["spec"]["selector"] == deployment["spec"]["selector"]
    weights = [
        s["setWeight"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "setWeight" in s
    ]
    assert weights == sorted(weights) and weights[-1] == 100 and weights[0] < 50
    assert any("pause" in s for s in rollout["spec"]["strategy"]["canary"]["steps"])
    # Everything else is prod's.
    prod = {(o["kind"], o["metadata"]["name"]) for o in rendered["overlays/prod"]}
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == prod | {
        ("Rollout", "tomosight-serving")
    }


def test_workloads_are_hardened_and_sized(rendered) -> None:
    objects = rendered["base"]
    namespaces = {
        o["metadata"]["name"]: o["metadata"]["labels"] for o in objects if o["kind"] == "Namespace"
    }
    assert set(namespaces) == set(NAMESPACES)
    for workload in (o for o in objects if o["kind"] in WORKLOAD_KINDS):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = dep.pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        level = namespaces[workload["metadata"]["namespace"]]["pod-security.kubernetes.io/enforce"]
        if level == "restricted":
            assert spec["securityContext"]["runAsNonRoot"] is True, where
        for container in containers(workload):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"][
                "drop"
            ] == ["ALL"]
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(requests) and "memory" in limits, where
            assert ":" in container["image"] and not container["image"].endswith(":latest"), where


# -- network isolation: a small evaluator of the NetworkPolicies (matchLabels selectors only) --


def selects(selector: dict | None, labels: dict) -> bool:
    assert set(selector or {}) <= {"matchLabels"}, "the evaluator reads matchLabels only"
    return (selector or {}).get("matchLabels", {}).items() <= labels.items()


def peer_matches(
    peer: dict, namespace: str, labels: dict, policy_namespace: str, ip: str | None
) -> bool:
    if "ipBlock" in peer:
        if ip is None:
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(
            address in ipaddress.ip_network(c) for c in block.get("except", [])
        )
    if ip is not None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(
            peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}
        )
    else:
        in_namespace = namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector"), labels)


def port_matches(rule: dict, port: int) -> bool:
    return not rule.get("ports") or any(p.get("port") == port for p in rule["ports"])


def side_allows(
    policies,
    direction: str,
    own: tuple[str, dict],
    other: tuple[str, dict],
    port: int,
    ip: str | None = None,
) -> bool:
    """Whether the policies of ``own``'s namespace let traffic through in ``direction``."""
    namespace, labels = own
    kind = "Ingress" if direction == "ingress" else "Egress"
    peers_key = "from" if direction == "ingress" else "to"
    applying = [
        p for p in policies
        if p["metadata"]["namespace"] == namespace and kind in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"], labels)
    ]  # fmt: skip
    if namespace not in NAMESPACES:
        return True  # outside the platform (ingress controller, Prometheus): not isolated here
    return any(
        port_matches(rule, port)
        and any(peer_matches(peer, *other, namespace, ip) for peer in rule.get(peers_key, []))
        for policy in applying for rule in policy["spec"].get(direction, [])
    )  # fmt: skip


def allowed(policies, source: tuple[str, dict], destination: tuple[str, dict], port: int) -> bool:
    return side_allows(policies, "egress", source, destination, port) and side_allows(
        policies, "ingress", destination, source, port
    )


API = ("tomosight-serving", {"app.kubernetes.io/name": "tomosight-serving"})
MLFLOW = ("tomosight", {"app.kubernetes.io/name": "mlflow"})
STEP = ("tomosight", {"dagster/job": "per_study_job", "tomosight.io/workload": "dagster-run"})
ORTHANC = ("tomosight-data", {"app.kubernetes.io/name": "orthanc"})
INGRESS = ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = ("monitoring", {"app.kubernetes.io/name": "prometheus"})


@pytest.mark.parametrize("overlay", dep.OVERLAYS)
def test_network_policies_isolate_the_zones(rendered, overlay) -> None:
    policies = [o for o in rendered[f"overlays/{overlay}"] if o["kind"] == "NetworkPolicy"]
    for namespace in NAMESPACES:
        assert any(
            p["metadata"]["namespace"] == namespace and p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in policies
        ), f"{namespace} has no default deny"  # fmt: skip
    assert allowed(policies, INGRESS, API, 8000)
    assert allowed(policies, PROMETHEUS, API, 8000)
    assert allowed(policies, API, MLFLOW, 5000)
    assert allowed(policies, STEP, MLFLOW, 5000)
    assert allowed(policies, STEP, ORTHANC, 8042)
    # The API must not reach the PACS, and each side refuses it on its own (defence in depth).
    assert not side_allows(policies, "egress", API, ORTHANC, 8042)
    assert not side_allows(policies, "ingress", ORTHANC, API, 8042)
    assert not allowed(policies, API, STEP, 3030)
    assert not allowed(policies, INGRESS, MLFLOW, 5000), "MLflow is not exposed"
    assert not allowed(policies, INGRESS, ORTHANC, 8042)
    assert not allowed(policies, ORTHANC, MLFLOW, 5000), "the PACS talks to nobody"
    assert not allowed(policies, STEP, API, 8000)
    # The PACS takes DICOM from the modalities' network only; the API cannot leave by it.
    assert side_allows(policies, "ingress", ORTHANC, ("", {}), 4242, ip="192.0.2.10")
    assert not side_allows(policies, "ingress", ORTHANC, ("", {}), 4242, ip="203.0.113.9")
    assert not side_allows(policies, "egress", API, ("", {}), 5432, ip="10.42.0.20")


# -- references across objects and namespaces --


def service_port(objects, url: str) -> tuple[dep.Manifest, int]:
    """The Service and port an in-cluster URL (<svc>.<ns>.svc.cluster.local:<port>) points at."""
    parsed = urlparse(url.split("+", 1)[-1])
    service, namespace = parsed.hostname.split(".")[:2]
    svc = dep.find(objects, "Service", service, namespace)
    ports = {p["port"] for p in svc["spec"].get("ports", [])}
    assert parsed.port in ports, f"{url}: {service}.{namespace} has ports {ports}"
    return svc, parsed.port


@pytest.mark.parametrize("overlay", dep.OVERLAYS)
def test_urls_point_at_existing_services(rendered, overlay) -> None:
    objects = rendered[f"overlays/{overlay}"]
    training = dep.find(objects, "ConfigMap", "tomosight-env", "tomosight")["data"]
    serving = dep.find(objects, "ConfigMap", "tomosight-serving-env", "tomosight-serving")["data"]
    mlflow = dep.find(objects, "ConfigMap", "mlflow-env", "tomosight")["data"]
    allowed_hosts = mlflow["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for env in (training, serving):
        service_port(objects, env["MLFLOW_TRACKING_URI"])
        assert urlparse(env["MLFLOW_TRACKING_URI"]).netloc in allowed_hosts, (
            "MLflow would reject the Host"
        )
        service_port(objects, env["TOMOSIGHT_SOURCE_URI"])
    postgres = dep.find(objects, "Service", "postgresql", "tomosight")
    assert postgres["spec"]["type"] == "ExternalName"
    assert training["DAGSTER_PG_HOST"] == "postgresql.tomosight.svc.cluster.local"
    port = int(training["DAGSTER_PG_PORT"])
    egress = dep.find(objects, "NetworkPolicy", "egress-postgresql", "tomosight")
    assert [p["port"] for p in egress["spec"]["egress"][0]["ports"]] == [port]
    templates = [
        value for o in objects if o["kind"] == "ExternalSecret"
        for value in o["spec"]["target"].get("template", {}).get("data", {}).values()
        if value.startswith("postgresql")
    ]  # fmt: skip
    assert len(templates) == 2
    for uri in templates:
        assert f"@{training['DAGSTER_PG_HOST']}:{port}/" in uri and "sslmode=require" in uri


def test_keycloak_realm_defines_what_the_api_expects(rendered) -> None:
    from serving.auth import ROLE_PERMISSIONS
    from serving.oidc_settings import OidcSettings

    realm = json.loads((dep.DEPLOYMENT / "keycloak" / "tomosight-realm.json").read_text())
    roles = {r["name"] for r in realm["roles"]["realm"]}
    assert roles == {"radiologist", "admin", "data-engineer"}
    assert set(ROLE_PERMISSIONS) <= roles, "a role the API grants is missing from the realm"
    clients = {c["clientId"]: c for c in realm["clients"]}
    for overlay in dep.OVERLAYS:
        env = dep.find(rendered[f"overlays/{overlay}"], "ConfigMap", "tomosight-serving-env")[
            "data"
        ]
        settings = OidcSettings.from_env(env)
        assert urlparse(settings.issuer).path == f"/realms/{realm['realm']}"
        assert settings.jwks_url == settings.issuer + "/protocol/openid-connect/certs"
        api = clients[settings.audience]
        assert api["bearerOnly"] and not api["publicClient"]
    signing_in = [
        c
        for c in realm["clients"]
        if c["standardFlowEnabled"]
        or c.get("attributes", {}).get("oauth2.device.authorization.grant.enabled") == "true"
    ]
    assert signing_in
    for client in signing_in:
        audience = [
            m["config"] for m in client.get("protocolMappers", [])
            if m["protocolMapper"] == "oidc-audience-mapper"
        ]  # fmt: skip
        assert audience and audience[0]["included.client.audience"] in clients
        assert audience[0]["access.token.claim"] == "true"
        assert client["publicClient"] and not client["implicitFlowEnabled"]
        if client["standardFlowEnabled"]:
            assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    text = json.dumps(realm)
    assert '"secret"' not in text and '"credentials"' not in text and '"users"' not in text


def orthanc_setting(name: str) -> list[str]:
    """ORTHANC__DICOM_WEB__ROOT -> ["DicomWeb", "Root"] (the orthancteam image's convention)."""
    return [
        "".join(w.capitalize() for w in part.split("_"))
        for part in name.removeprefix("ORTHANC__").split("__")
    ]


def env_value(text: str) -> object:
    """An ORTHANC__ variable's value as Orthanc reads it: JSON when it parses, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def test_pacs_gateway_runs_the_repository_orthanc_configuration(rendered) -> None:
    config = json.loads((dep.DEPLOYMENT / "orthanc" / "orthanc.json").read_text())
    orthanc = dep.find(rendered["base"], "StatefulSet", "orthanc", "tomosight-data")
    env = {e["name"]: e["value"] for e in dep.pod_spec(orthanc)["containers"][0]["env"]}
    covered = set()
    for name, value in env.items():
        if not name.startswith("ORTHANC__"):
            continue
        node = config
        *parents, leaf = orthanc_setting(name)
        for key in parents:
            node = node[key]
        assert env_value(value) == node[leaf], name
        covered.add(orthanc_setting(name)[0])
    # Plugins come with the image; the registered user's password from the orthanc-secrets Secret.
    assert set(config) - covered == {"Plugins", "RegisteredUsers"}
    external = dep.find(rendered["base"], "ExternalSecret", "orthanc-secrets", "tomosight-data")
    assert set(external["spec"]["target"]["template"]["data"]) == {"ORTHANC__REGISTERED_USERS"}
    user = json.loads(external["spec"]["target"]["template"]["data"]["ORTHANC__REGISTERED_USERS"])
    training = dep.find(rendered["base"], "ConfigMap", "tomosight-env", "tomosight")["data"]
    assert set(user) == {training["TOMOSIGHT_SOURCE_USERNAME"]} == set(config["RegisteredUsers"])


def test_argocd_applications_deploy_every_environment(rendered) -> None:
    project = dep.yaml_documents(dep.DEPLOYMENT / "argocd" / "project.yaml")[0]
    deployed = set()
    for env in dep.ENVIRONMENTS:
        apps = {
            a["metadata"]["name"]: a
            for a in dep.yaml_documents(dep.DEPLOYMENT / "argocd" / f"{env}.yaml")
        }
        platform, dagster = apps[f"tomosight-{env}"], apps[f"dagster-{env}"]
        for app in (platform, dagster):
            assert app["spec"]["project"] == project["metadata"]["name"]
            assert app["spec"]["destination"]["name"] == f"tomosight-{env}"
            assert {"name": f"tomosight-{env}", "namespace": "tomosight*"} in project["spec"][
                "destinations"
            ]
            sources = app["spec"].get("sources") or [app["spec"]["source"]]
            assert {s["repoURL"] for s in sources} <= set(project["spec"]["sourceRepos"])
        path = platform["spec"]["source"]["path"]
        overlay_name = path.removeprefix("deployment/k8s/overlays/")
        assert overlay_name in dep.OVERLAYS and (dep.REPO / path / "kustomization.yaml").exists()
        deployed.add(overlay_name)
        chart, values = dagster["spec"]["sources"]
        for value_file in chart["helm"]["valueFiles"]:
            assert (dep.REPO / value_file.removeprefix(f"${values['ref']}/")).exists(), value_file
        (param,) = chart["helm"]["parameters"]
        assert param["name"] == "dagster-user-deployments.deployments[0].image.tag"
        images = {
            i["name"]: i["newTag"]
            for i in yaml.safe_load(
                (dep.K8S / "overlays" / env / "kustomization.yaml").read_text()
            )["images"]
        }
        assert set(images.values()) == {param["value"]}, f"{env}: one release per environment"
        assert env == "prod" or platform["spec"]["syncPolicy"]["automated"]["prune"]
    # prod's canary overlay builds on overlays/prod, so every overlay is deployed.
    canary = yaml.safe_load(
        (dep.K8S / "overlays" / "prod-canary" / "kustomization.yaml").read_text()
    )
    assert "../prod" in canary["resources"]
    assert deployed | {"prod"} == set(dep.OVERLAYS)
    assert {"group": "", "kind": "Secret"} in project["spec"]["namespaceResourceBlacklist"]
