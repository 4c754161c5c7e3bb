"""Turn a DBT view into a fixed-size model tensor, and many views into ``.npy`` files + a manifest.

A :class:`PreprocessConfig` names the slice strategy (the ``slice_strategy`` values of
the ``Preprocessed`` contract), the model input size and dtype; its
:meth:`~PreprocessConfig.fingerprint` identifies the preprocessing version in every
manifest row.  Only the frames a strategy needs are decoded:

- ``central``: the middle frame (1 channel);
- ``mip``: all frames, maximum intensity projection (1 channel);
- ``slab_mip``: ``slab`` frames around the middle, maximum (1 channel);
- ``sampled``: ``n_slices`` evenly spaced frames, one channel each (frames repeat
  when the volume has fewer than ``n_slices``, so every tensor has the same shape).

Images come from :func:`ml.dicomio.load_view` (presentation values in ``[0, 1]``, Duke
frame) and are fitted by :mod:`ml.preprocess_geometry`.  ``decoder`` (``"auto"``, ``"cpu"``,
``"gpu"``; None reads ``TOMOSIGHT_DECODER``) picks the frame decoder of :mod:`ml.decoders`;
it is not part of the config or its fingerprint because every decoder gives the same pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ml.atomic import atomic_path
from ml.decoders import decoder_choice
from ml.dicomio import DicomError, load_view, read_header
from ml.laterality import Orientation
from ml.options import check_choice, check_positive_int
from ml.preprocess_geometry import Pad, fit_to_canvas
from ml.preprocess_mask import breast_mask
from ml.slicing import frame_indices

PREPROCESS_VERSION = 1
"""Bump when the algorithm changes in a way that changes tensors for the same config."""

STRATEGIES: tuple[str, ...] = ("central", "mip", "slab_mip", "sampled")
DTYPES: tuple[str, ...] = ("float16", "float32")
MIP_CHUNK_FRAMES = 16
"""Frames decoded per step of a projection, so memory stays bounded on 100-frame volumes."""

Item = tuple[str, str, str]
"""``(DICOM path, Duke view name, output .npy path)``."""


class PreprocessConfigError(ValueError):
    """Raised for an invalid preprocessing configuration."""


def _choice(field: str, value: object, options: Sequence[str]) -> None:
    check_choice(field, value, options, PreprocessConfigError)


def _positive_int(field: str, value: object) -> None:
    check_positive_int(field, value, PreprocessConfigError)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a view becomes a ``(C, height, width)`` tensor; validated when built."""

    strategy: str = "central"
    height: int = 256
    width: int = 208
    n_slices: int = 8
    slab: int = 5
    breast_mask: bool = False
    dtype: str = "float16"

    def __post_init__(self) -> None:
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("dtype", self.dtype, DTYPES)
        for name in ("height", "width", "n_slices", "slab"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.breast_mask, bool):
            raise PreprocessConfigError(f"breast_mask must be a bool, got {self.breast_mask!r}")

    @property
    def channels(self) -> int:
        """Channels of the output tensor: ``n_slices`` for ``sampled``, else 1."""
        return self.n_slices if self.strategy == "sampled" else 1

    def to_dict(self) -> dict[str, Any]:
        """Every setting plus the algorithm version, JSON-ready."""
        return {"version": PREPROCESS_VERSION, **dataclasses.asdict(self)}

    def fingerprint(self) -> str:
        """Short stable hash of :meth:`to_dict` (16 hex digits)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Rebuild a config recorded by :meth:`to_dict`; refuses another algorithm version."""
        settings = dict(data)
        version = settings.pop("version", PREPROCESS_VERSION)
        if version != PREPROCESS_VERSION:
            raise PreprocessConfigError(
                f"config was recorded by preprocessing version {version}; "
                f"this code is {PREPROCESS_VERSION}"
            )
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise PreprocessConfigError(f"unknown config keys {unknown}")
        return cls(**settings)


def needed_frames(n_frames: int, config: PreprocessConfig) -> list[int]:
    """Frame indices the strategy uses, in channel order (``sampled`` may repeat frames)."""
    if config.strategy == "central":
        return frame_indices(n_frames, "central")
    if config.strategy == "mip":
        return frame_indices(n_frames, "all")
    if config.strategy == "slab_mip":
        return frame_indices(n_frames, "slab", slab=config.slab)
    picked = frame_indices(n_frames, "sampled", n_slices=config.n_slices)
    if len(picked) < config.n_slices:  # short volume: repeat frames to keep C = n_slices
        bins = (np.arange(config.n_slices) + 0.5) * n_frames / config.n_slices
        picked = [int(i) for i in np.floor(bins)]
    return picked


@dataclass(frozen=True)
class Projection:
    """The strategy's image stack ``(C, rows, cols)`` in the Duke frame, before resizing."""

    stack: np.ndarray
    frame_indices: tuple[int, ...]
    orientation: Orientation


def view_side(view: str) -> str:
    """Laterality ``"L"``/``"R"`` from a Duke view name (``lcc``, ``rmlo1``)."""
    side = str(view)[:1].upper()
    if side not in ("L", "R"):
        raise ValueError(f"view {view!r} does not start with l or r")
    return side


def load_projection(
    path: str | os.PathLike[str], view: str, config: PreprocessConfig, decoder: str | None = None
) -> Projection:
    """Decode the frames ``config`` needs and project them (maximum for the MIP strategies)."""
    side = view_side(view)
    indices = needed_frames(read_header(path).frames, config)
    if config.strategy in ("mip", "slab_mip"):
        return _max_projection(path, indices, side, decoder)
    unique = sorted(set(indices))
    image = load_view(path, unique, laterality=side, decoder=decoder)
    stack = image.pixels[np.searchsorted(unique, indices)]
    return Projection(stack, tuple(indices), image.orientation)


def _max_projection(
    path: str | os.PathLike[str], indices: list[int], side: str, decoder: str | None
) -> Projection:
    """Running maximum over chunks of frames; every chunk is oriented like the first."""
    peak: np.ndarray | None = None
    orientation: Orientation | None = None
    for start in range(0, len(indices), MIP_CHUNK_FRAMES):
        image = load_view(path, indices[start : start + MIP_CHUNK_FRAMES], laterality=side, decoder=decoder)
        pixels = image.pixels
        if orientation is None:
            orientation = image.orientation
        elif image.orientation.flipped != orientation.flipped:
            pixels = pixels[:, ::-1, ::-1]
        chunk = pixels.max(axis=0)
        peak = chunk if peak is None else np.maximum(peak, chunk)
    assert peak is not None and orientation is not None  # indices is never empty
    return Projection(peak[None], tuple(indices), orientation)


@dataclass(frozen=True)
class PreprocessedView:
    """A model-ready tensor and what maps its pixels back to the Duke frame.

    A Duke-frame point ``(x, y)`` sits at ``(x * scale + pad.left, y * scale + pad.top)``
    in ``array``; see :func:`ml.preprocess_geometry.to_model_coords`.
    """

    array: np.ndarray  # (C, height, width), config.dtype
    frame_indices: tuple[int, ...]
    scale: float
    pad: Pad
    orientation: Orientation


def preprocess_view(
    path: str | os.PathLike[str], view: str, config: PreprocessConfig, decoder: str | None = None
) -> PreprocessedView:
    """Decode, project, resize keeping the aspect, pad away from the chest wall, mask if asked."""
    projection = load_projection(path, view, config, decoder)
    fitted = fit_to_canvas(
        projection.stack, config.height, config.width, projection.orientation.laterality
    )
    array = fitted.array
    if config.breast_mask:
        array = array * breast_mask(array.max(axis=0))[None]
    return PreprocessedView(
        array.astype(config.dtype),
        projection.frame_indices,
        fitted.scale,
        fitted.pad,
        projection.orientation,
    )


def write_tensor(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` as ``.npy`` atomically (temp file + ``os.replace``), memory-mappable."""
    target = Path(path)
    if target.suffix != ".npy":
        raise ValueError(f"tensor path must end with .npy, got {target}")
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    return target


def _row(source: str, view: str, config: PreprocessConfig, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source": source,
        "view": view,
        "status": "ok",
        "reason": None,
        "error": None,
        "tensor_path": None,
        "slice_strategy": config.strategy,
        "preprocess_fingerprint": config.fingerprint(),
        "dtype": config.dtype,
        "height": None,
        "width": None,
        "n_slices": None,
        "frame_indices": None,
        "scale": None,
        "pad_top": None,
        "pad_bottom": None,
        "pad_left": None,
        "pad_right": None,
        "laterality": None,
        "laterality_source": None,
        "flipped": None,
        "laterality_disagreement": None,
    }
    row.update(fields)
    return row


def preprocess_item(item: Item, config: PreprocessConfig, decoder: str | None = None) -> dict[str, Any]:
    """Preprocess one ``(path, view, out_path)`` item and write its tensor; return its manifest row.

    Input problems (:class:`~ml.dicomio.DicomError`, a missing file) give a row with
    ``status="failed"`` and ``reason``; anything else (e.g. a full disk) raises.
    """
    source, view, out_path = item
    try:
        result = preprocess_view(source, view, config, decoder)
    except DicomError as exc:
        return _row(source, view, config, status="failed", reason=exc.reason, error=str(exc))
    except FileNotFoundError as exc:
        return _row(source, view, config, status="failed", reason="missing_file", error=str(exc))
    write_tensor(result.array, out_path)
    channels, height, width = result.array.shape
    return _row(
        source,
        view,
        config,
        tensor_path=out_path,
        height=height,
        width=width,
        n_slices=channels,
        frame_indices=list(result.frame_indices),
        scale=result.scale,
        pad_top=result.pad.top,
        pad_bottom=result.pad.bottom,
        pad_left=result.pad.left,
        pad_right=result.pad.right,
        laterality=result.orientation.laterality,
        laterality_source=result.orientation.source,
        flipped=result.orientation.flipped,
        laterality_disagreement=result.orientation.disagreement,
    )


def preprocess_many(
    items: Sequence[tuple[str | os.PathLike[str], str, str | os.PathLike[str]]],
    config: PreprocessConfig,
    workers: int = 1,
    progress: Callable[[dict[str, Any]], None] | None = None,
    decoder: str | None = None,
) -> list[dict[str, Any]]:
    """Preprocess ``items`` in ``workers`` spawned processes; return manifest rows in input order.

    ``progress`` is called in this process with each row as it finishes (e.g.
    ``lambda row: bar.update()`` for a tqdm bar).  Bad views and duplicate output
    paths are refused before any work starts, and so is an unknown ``decoder``.  With
    the GPU decoder every worker process opens its own CUDA context: prefer few workers.
    """
    decoder = decoder_choice(decoder)
    work: list[Item] = [(os.fspath(p), str(v), os.fspath(o)) for p, v, o in items]
    for _, view, _ in work:
        view_side(view)
    duplicates = sorted(out for out, n in Counter(out for _, _, out in work).items() if n > 1)
    if duplicates:
        raise ValueError(f"several items write the same tensor: {duplicates[:5]}")
    rows: list[dict[str, Any]] = [{} for _ in work]
    if workers <= 1 or len(work) <= 1:
        for index, item in enumerate(work):
            rows[index] = preprocess_item(item, config, decoder)
            if progress is not None:
                progress(rows[index])
        return rows
    with ProcessPoolExecutor(min(workers, len(work)), mp_context=get_context("spawn")) as pool:
        futures = {
            pool.submit(preprocess_item, item, config, decoder): index for index, item in enumerate(work)
        }
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            if progress is not None:
                progress(rows[futures[future]])
    return rows
