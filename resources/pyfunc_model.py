"""The DBT classifier as an MLflow pyfunc: safetensors weights + a JSON config, with a signature.

Not ``mlflow.pytorch``'s pt2 default, which loses ``forward_features`` (Grad-CAM) and
freezes H x W.  ``load_classifier(uri)`` gives back the real ``DBTClassifier`` and its
calibration temperature, for batch scoring and serving alike.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

CONFIG_ARTIFACT = "config"
WEIGHTS_ARTIFACT = "weights"
# What the pyfunc imports to rebuild the model; stated instead of inferred (inference costs ~10 s a model).
RUNTIME_PACKAGES = ("torch", "timm", "safetensors", "numpy", "mlflow")


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model, from the versions installed here (local builds like +cu130 dropped)."""
    return [f"{name}=={version(name).split('+', 1)[0]}" for name in RUNTIME_PACKAGES]


class DbtClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """Exam batches ``{"x": (B, 4, S, H, W) float32, "view_mask": (B, 4) bool}`` to calibrated probabilities."""

    def load_context(self, context: Any) -> None:
        from safetensors.torch import load_file

        from ml.models import ModelConfig, create_model

        config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        model = create_model(ModelConfig.from_dict(config["model"]))
        model.load_state_dict(load_file(context.artifacts[WEIGHTS_ARTIFACT]))
        self.model = model.eval()
        self.temperature = float(config.get("temperature", 1.0))

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow infers schemas from hints
        import torch

        x = torch.as_tensor(np.asarray(model_input["x"], dtype=np.float32))
        mask = torch.as_tensor(np.asarray(model_input["view_mask"]).astype(bool))
        with torch.no_grad():
            out = self.model(x, mask)
        exam = out["exam"][:, 0] / self.temperature
        views = out["view"][..., 0] / self.temperature
        return {
            "prob_malignant": torch.sigmoid(exam).numpy().astype(np.float32),
            "view_probs": torch.sigmoid(views).masked_fill(~mask, 0.0).numpy().astype(np.float32),
        }


def signature(n_slices: int, height: int, width: int):
    """Input/output signature: tensors with a free batch axis and the model's input size."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([
            TensorSpec(np.dtype(np.float32), (-1, 4, n_slices, height, width), "x"),
            TensorSpec(np.dtype(np.bool_), (-1, 4), "view_mask"),
        ]),
        outputs=Schema([
            TensorSpec(np.dtype(np.float32), (-1,), "prob_malignant"),
            TensorSpec(np.dtype(np.float32), (-1, 4), "view_probs"),
        ]),
    )  # fmt: skip


def log_classifier(model: Any, *, temperature: float = 1.0, registered_model_name: str | None = None, extra: dict | None = None):
    """Log ``model`` (a ``DBTClassifier``) into the active MLflow run; register it when a name is given."""
    from safetensors.torch import save_file

    cfg = model.config
    height, width = cfg.input_size
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"model": cfg.to_dict(), "temperature": temperature, **(extra or {})}, indent=2))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=DbtClassifierPyfunc(),
            artifacts={WEIGHTS_ARTIFACT: str(weights), CONFIG_ARTIFACT: str(config)},
            signature=signature(cfg.n_slices, height, width),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
        )


def load_classifier(model_uri: str) -> tuple[Any, float]:
    """The ``DBTClassifier`` (eval mode) and temperature behind a registered pyfunc model URI."""
    wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    return wrapper.model, wrapper.temperature
