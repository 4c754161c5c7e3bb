"""Kubernetes pod settings for steps that need a GPU (read by dagster-k8s from op tags).

They take effect under ``k8s_job_executor`` only (each step in its own pod); the
in-process executor of the local profile ignores them.
"""

from __future__ import annotations

import os

GPU_PRODUCT = os.environ.get("TOMOSIGHT_GPU_PRODUCT", "NVIDIA-H200")

GPU_STEP_TAGS: dict[str, object] = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "48Gi", "nvidia.com/gpu": "1"},
            }
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.product": GPU_PRODUCT},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
}
"""Op tags of the training and prediction steps: one GPU, its node pool, and its taint."""
