"""Compute settings shared by the CPU-heavy steps (decoding, preprocessing, detection)."""

from __future__ import annotations

import os

import dagster as dg


class ComputeResource(dg.ConfigurableResource):
    """``workers``: processes for decoding (the codecs hold the GIL); ``device``: torch device."""

    workers: int = max(os.cpu_count() or 1, 1)
    device: str = "cpu"
