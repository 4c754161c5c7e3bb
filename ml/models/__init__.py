"""DBT classifiers: timm backbone, slice pooling, CC/MLO and left/right fusion, Grad-CAM.

Entry point: ``create_model(name_or_config, **overrides)`` over a registry of named
:class:`ModelConfig` s.  Framework-free (no Dagster, no MLflow); weights load from local
files only.
"""

from ml.models.backbone import (
    LoadReport,
    WeightsError,
    adapt_input_conv,
    load_local_weights,
    read_state_dict,
)
from ml.models.classifier import DBTClassifier, Encoding
from ml.models.config import CLASS_NAMES, ModelConfig, ModelConfigError
from ml.models.fusion import BREAST_VIEWS, VIEW_ORDER
from ml.models.gradcam import CamError, grad_cam, save_cam_overlay
from ml.models.registry import (
    create_model,
    get_model_config,
    list_models,
    register_model,
    resolve_config,
)

__all__ = [
    "BREAST_VIEWS",
    "CLASS_NAMES",
    "VIEW_ORDER",
    "CamError",
    "DBTClassifier",
    "Encoding",
    "LoadReport",
    "ModelConfig",
    "ModelConfigError",
    "WeightsError",
    "adapt_input_conv",
    "create_model",
    "get_model_config",
    "grad_cam",
    "list_models",
    "load_local_weights",
    "read_state_dict",
    "register_model",
    "resolve_config",
    "save_cam_overlay",
]
