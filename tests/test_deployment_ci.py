"""GitHub workflows and container images of the project's users (.github/, deployment/docker/).

The workflows parse as YAML and hold the expected jobs; the Dockerfiles pin their base by tag
and digest, run as a non-root user, install the project's pins and copy only what the
root .dockerignore lets into the build context.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import yaml

from tests.support import deployment as dep

WORKFLOWS = dep.REPO / ".github" / "workflows"
DOCKER = dep.DEPLOYMENT / "docker"
BASE_PIN = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def run_lines(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_tests_run_on_every_push_with_make_test() -> None:
    ci = workflow("ci.yml")
    assert "push" in ci["on"] and "pull_request" in ci["on"]
    assert ci["on"]["push"] is None or "branches" not in ci["on"]["push"], "every branch"
    assert set(ci["jobs"]) == {"test"}
    assert re.search(r"^make test$", run_lines(ci["jobs"]["test"]), re.MULTILINE)
    assert "postgres" in ci["jobs"]["test"]["services"]


def dockerfile_stages(path: Path) -> tuple[str, list[str], dict[str, str]]:
    """(base ARG default, stage names, final USER per stage) of a Dockerfile."""
    text = path.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    stages, users, current = [], {}, None
    for line in text.splitlines():
        if m := re.match(r"FROM (\S+)(?: AS (\S+))?", line):
            assert m.group(1) in ("${PYTHON_IMAGE}", *stages), (
                f"{path.name}: unpinned FROM {m.group(1)}"
            )
            current = m.group(2) or f"#{len(stages)}"
            stages.append(current)
            users[current] = users.get(m.group(1), "")
        elif m := re.match(r"USER (\S+)", line):
            users[current] = m.group(1)
    return base, stages, users


def test_images_are_built_scanned_and_pushed_on_tags() -> None:
    images = workflow("images.yml")
    assert images["on"]["push"]["tags"] == ["v*.*.*"] and "pull_request" in images["on"]
    assert set(images["jobs"]) == {"build", "bump"}
    build = images["jobs"]["build"]
    matrix = build["strategy"]["matrix"]["include"]
    assert {m["image"] for m in matrix} == {
        "tomosight-dagster",
        "tomosight-serving",
        "tomosight-mlflow",
    }
    for entry in matrix:
        _, stages, _ = dockerfile_stages(dep.REPO / entry["dockerfile"])
        assert not entry["target"] or entry["target"] in stages, entry
    steps = {s.get("name"): s for s in build["steps"]}
    scan = steps["Scan (Trivy)"]["run"]
    assert "--exit-code 1" in scan and "HIGH,CRITICAL" in scan
    assert list(steps).index("Scan (Trivy)") < list(steps).index("Push")
    assert (
        steps["Push"]["if"]
        == steps["Log in to GHCR"]["if"]
        == "startsWith(github.ref, 'refs/tags/v')"
    )
    assert steps["Build"]["with"]["push"] is False
    bump = images["jobs"]["bump"]
    assert bump["needs"] == "build" and bump["if"] == "startsWith(github.ref, 'refs/tags/v')"


def test_bump_step_edits_what_exists() -> None:
    script = run_lines(workflow("images.yml")["jobs"]["bump"])
    for env in re.search(r"for env in ([\w ]+); do", script).group(1).split():
        apps = {
            a["metadata"]["name"]: a
            for a in dep.yaml_documents(dep.DEPLOYMENT / "argocd" / f"{env}.yaml")
        }
        parameter = re.search(r'\.name == "([^"]+)"\) \| \.value', script).group(1)
        dagster = apps[f"dagster-{env}"]
        assert parameter in {p["name"] for p in dagster["spec"]["sources"][0]["helm"]["parameters"]}
        overlay = yaml.safe_load((dep.K8S / "overlays" / env / "kustomization.yaml").read_text())
        bumped = set(re.findall(r'\.name == "(tomosight-[a-z]+)"', script))
        assert bumped == {i["name"] for i in overlay["images"]}
    assert "prod" not in re.search(r"for env in ([\w ]+); do", script).group(1)


def dockerignore_allows(path: str) -> bool:
    """Whether the root .dockerignore lets ``path`` into the build context (last match wins)."""
    allowed = True
    for line in (dep.REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if (
            fnmatch.fnmatch(path, pattern)
            or path.startswith(pattern + "/")
            or (pattern.startswith("**/") and fnmatch.fnmatch(Path(path).name, pattern[3:]))
        ):
            allowed = negated
    return allowed


def test_dockerfiles_pin_bases_run_unprivileged_and_copy_what_the_context_holds() -> None:
    pyproject = (dep.REPO / "pyproject.toml").read_text()
    makefile = (dep.REPO / "Makefile").read_text()
    for path in (DOCKER / "Dockerfile", DOCKER / "Dockerfile.mlflow"):
        text = path.read_text()
        base, stages, users = dockerfile_stages(path)
        assert BASE_PIN.match(base), base
        final = [s for s in stages if s not in ("build", "runtime")]
        assert final
        for stage in final:
            assert users[stage] and not users[stage].startswith(("0", "root")), (path.name, stage)
        for source in re.findall(r"^COPY (?!--from)(?:--chown=\S+ )?(.+) \S+$", text, re.MULTILINE):
            for item in source.split():
                assert (dep.REPO / item).exists(), item
                assert dockerignore_allows(item), f"{item} is excluded by .dockerignore"
        for pin in re.findall(r"\b(torch==[\d.]+|torchvision==[\d.]+|mlflow==[\d.]+)", text):
            assert f'"{pin}"' in pyproject, pin
            assert pin.startswith("mlflow") or pin in makefile
    assert not dockerignore_allows(".venv/bin/python") and not dockerignore_allows("demo_home/x")
    assert not dockerignore_allows("tests/test_deployment_ci.py") and dockerignore_allows(
        "ml/froc.py"
    )


def test_dagster_image_serves_the_workspace_code_location() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text.split("AS dagster", 1)[1], re.MULTILINE).group(1)
    args = yaml.safe_load(cmd)
    module = yaml.safe_load((dep.REPO / "workspace.yaml").read_text())["load_from"][0][
        "python_module"
    ]
    assert args[:3] == ["dagster", "api", "grpc"]
    assert args[args.index("--module-name") + 1] == module["module_name"]
    assert args[args.index("--attribute") + 1] == module["attribute"]
    serving = text.split("AS serving", 1)[1]
    assert 'ENTRYPOINT ["tomosight"]' in serving and 'CMD ["serve", "--port", "8000"]' in serving
