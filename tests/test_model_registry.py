"""Champion/challenger gate on a real MLflow registry (SQLite backend in tmp)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resources.mlflow_resource import MlflowResource
from resources.model_registry import CHAMPION, CHALLENGER, Validation, decide, gate_challenger, mark_challenger


def test_decide_compares_the_challenger_ci_with_the_champion_auc():
    champion = ("1", Validation(0.90, 0.85, 0.95))
    assert decide("2", Validation(0.88, 0.80, 0.93), champion).promoted  # not worse within its CI
    rejected = decide("2", Validation(0.70, 0.60, 0.80), champion)
    assert not rejected.promoted and "0.800 < champion AUC 0.900" in rejected.reason
    assert decide("1", Validation(0.5, 0.4, 0.6), None).promoted


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resource = MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts"))
    return resource


def register(resource: MlflowResource, value: float) -> str:
    import mlflow.pyfunc

    class Model(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.full(len(model_input), value)

    resource.configure()
    with resource.start_run(run_name=f"v{value}"):
        info = mlflow.pyfunc.log_model(name="model", python_model=Model(), registered_model_name="gate-test")
    return str(info.registered_model_version)


def test_gate_promotes_then_refuses_a_worse_model_and_records_why(registry):
    client = registry.client()
    first = register(registry, 0.1)
    mark_challenger(client, "gate-test", first, Validation(0.90, 0.85, 0.95))
    assert gate_challenger(client, "gate-test", first).promoted
    second = register(registry, 0.2)
    mark_challenger(client, "gate-test", second, Validation(0.70, 0.60, 0.80))
    decision = gate_challenger(client, "gate-test", second)
    assert not decision.promoted and decision.champion.auc == pytest.approx(0.90)
    assert client.get_model_version_by_alias("gate-test", CHAMPION).version == int(first)
    assert client.get_model_version_by_alias("gate-test", CHALLENGER).version == int(second)
    tags = client.get_model_version("gate-test", second).tags
    assert tags["promotion_decision"] == "rejected" and "champion AUC 0.900" in tags["promotion_reason"]
    import mlflow.pyfunc

    champion = mlflow.pyfunc.load_model("models:/gate-test@champion")
    assert champion.predict(np.zeros((3, 1))).tolist() == [0.1, 0.1, 0.1]


def test_classifier_round_trip_through_the_registry_by_champion_alias(registry):
    import torch

    from ml.models import create_model
    from resources.pyfunc_model import load_classifier, log_classifier

    torch.manual_seed(0)
    model = create_model("dbt_tiny", input_size=(32, 32)).eval()
    x = torch.rand(3, 4, 1, 32, 32)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [False, False, True, True]])
    with torch.no_grad():
        expected = torch.sigmoid(model(x, mask)["exam"][:, 0] / 1.5).numpy()
    registry.configure()
    with registry.start_run(run_name="cnn"):
        info = log_classifier(model, temperature=1.5, registered_model_name="dbt-cnn")
    client = registry.client()
    mark_challenger(client, "dbt-cnn", str(info.registered_model_version), Validation(0.9, 0.8, 0.95))
    assert gate_challenger(client, "dbt-cnn", str(info.registered_model_version)).promoted
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model("models:/dbt-cnn@champion")
    out = loaded.predict({"x": x.numpy(), "view_mask": mask.numpy()})
    np.testing.assert_array_equal(out["prob_malignant"], expected.astype(np.float32))
    assert out["view_probs"].shape == (3, 4) and (out["view_probs"][~mask.numpy()] == 0).all()
    restored, temperature = load_classifier("models:/dbt-cnn@champion")
    assert temperature == 1.5 and hasattr(restored, "forward_features")  # the real module: Grad-CAM works
    with torch.no_grad():
        np.testing.assert_array_equal(restored(x, mask)["exam"].numpy(), model(x, mask)["exam"].numpy())
    # The model's requirements are stated, pinned to the versions it was trained with (not inferred).
    import mlflow.artifacts

    requirements = Path(mlflow.artifacts.download_artifacts("models:/dbt-cnn@champion")) / "requirements.txt"
    pinned = requirements.read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in pinned and any(r.startswith("timm==") for r in pinned)
