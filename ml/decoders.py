"""Frame decoders for :func:`ml.dicomio.read_frames`: pydicom on the CPU, nvImageCodec on a GPU.

Every decoder returns exactly what pydicom's raw decode returns (same values, dtype and
shape ``(k, rows, cols)``), so the choice changes speed, never pixels:

- :class:`CpuDecoder`: pydicom with the plugin of :data:`ml.dicomio.SUPPORTED_TRANSFER_SYNTAXES`
  (pylibjpeg-openjpeg for JPEG 2000), in ``workers`` processes when asked (the codecs hold
  the GIL, so threads do not help).
- :class:`NvImageCodecDecoder`: JPEG 2000 frames of single-sample images are cut out of the
  encapsulated Pixel Data (:func:`ml.dicomio.frame_codestreams`) and decoded in batches on
  the GPU by nvImageCodec with nvJPEG2000 (the optional ``gpu`` extra); the device output
  is turned into pydicom's dtype by :func:`as_pydicom_frame`.  Every other transfer syntax,
  and any frame the GPU fails on, goes through the CPU decoder.

:func:`select_decoder` picks one: ``"cpu"``; ``"gpu"``, which raises
:class:`GpuDecoderUnavailableError` when no usable GPU decoder exists (an explicit request
should not run 15x slower unnoticed); or ``"auto"``, which returns the GPU decoder when it
is usable and otherwise a :class:`CpuDecoder` whose ``fallback_reason`` says why, logged
once per process.  The GPU decoder is usable when ``nvidia.nvimgcodec`` imports, the CUDA
driver reports a device and a self-test decodes a small JPEG 2000 image bit-exactly.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from pydicom.pixels import iter_pixels
from pydicom.pixels.utils import get_j2k_parameters
from pydicom.uid import JPEG2000, JPEG2000Lossless

from ml.dicomio import SUPPORTED_TRANSFER_SYNTAXES, DbtHeader, frame_codestreams
from ml.options import check_choice

LOGGER = logging.getLogger(__name__)

DECODER_CHOICES: tuple[str, ...] = ("auto", "cpu", "gpu")
DECODER_ENV = "TOMOSIGHT_DECODER"
"""Environment variable read when no decoder is given (default ``"cpu"``)."""
GPU_TRANSFER_SYNTAXES = frozenset({str(JPEG2000Lossless), str(JPEG2000)})
DEFAULT_GPU_BATCH = 32
"""Frames per nvImageCodec call; 253 frames/s at 32 vs 218 at 8 on one H200 (bench/README.md)."""


class DecoderConfigError(ValueError):
    """An unknown decoder name (argument or ``TOMOSIGHT_DECODER``)."""


class GpuDecoderUnavailableError(RuntimeError):
    """``decoder="gpu"`` was asked for but no usable GPU decoder exists; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"GPU decoding was requested but is unavailable: {reason}. "
            "Use decoder='auto' to fall back to the CPU, or 'cpu'."
        )


class FrameDecoder(Protocol):
    """Decodes frames of one file into pydicom's raw values ``(k, rows, cols)``."""

    @property
    def name(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        ...

    def decode(
        self,
        path: str,
        header: DbtHeader,
        indices: Sequence[int],
        *,
        workers: int = 1,
        mp_context: str = "spawn",
    ) -> np.ndarray:
        """Decode ``indices`` (valid, non-empty) of the file at ``path``."""
        ...


def _cpu_decode(path: str, indices: Sequence[int], plugin: str | None) -> np.ndarray:
    """pydicom's raw decode of ``indices`` of the file at ``path``, stacked."""
    options = {"decoding_plugin": plugin} if plugin else {}
    return np.stack([arr for arr in iter_pixels(path, indices=list(indices), raw=True, **options)])


@dataclass(frozen=True)
class CpuDecoder:
    """pydicom's decoders, in ``workers`` spawned processes when asked.

    ``fallback_reason`` is set when :func:`select_decoder` chose the CPU because the GPU
    decoder is unavailable.
    """

    fallback_reason: str | None = None
    name = "cpu"

    def decode(
        self,
        path: str,
        header: DbtHeader,
        indices: Sequence[int],
        *,
        workers: int = 1,
        mp_context: str = "spawn",
    ) -> np.ndarray:
        """Decode ``indices``; ``workers > 1`` splits them into contiguous chunks, one per process."""
        plugin = SUPPORTED_TRANSFER_SYNTAXES[header.transfer_syntax_uid]
        wanted = list(indices)
        if workers <= 1 or len(wanted) == 1:
            return _cpu_decode(path, wanted, plugin)
        chunks = [list(c) for c in np.array_split(np.array(wanted), min(workers, len(wanted))) if len(c)]
        with ProcessPoolExecutor(len(chunks), mp_context=get_context(mp_context)) as pool:
            parts = list(pool.map(_cpu_decode, [path] * len(chunks), chunks, [plugin] * len(chunks)))
        return np.concatenate(parts)


def gpu_supports(header: DbtHeader) -> bool:
    """Whether the GPU decoder handles this file: JPEG 2000, one sample, 8 or 16 bits allocated."""
    return (
        header.transfer_syntax_uid in GPU_TRANSFER_SYNTAXES
        and header.samples_per_pixel == 1
        and header.bits_allocated in (8, 16)
    )


def as_pydicom_frame(decoded: np.ndarray, codestream: bytes, header: DbtHeader) -> np.ndarray:
    """Turn a codec's native output for one JPEG 2000 frame into pydicom's raw frame.

    ``decoded`` is ``(rows, cols)`` or ``(rows, cols, 1)`` with the codestream's own sample
    type (unsigned or signed, 1 byte up to 8 bits of precision, 2 up to 16), as
    pylibjpeg-openjpeg and nvImageCodec (``allow_any_depth``) return it.  pydicom 3 reads
    those bytes as the dataset's PixelRepresentation type, casts them to BitsAllocated and,
    for MONOCHROME data whose codestream signedness disagrees with PixelRepresentation,
    sign-extends or masks to the codestream precision.  Values above BitsStored are kept,
    as pydicom keeps them.  Raises ValueError for an output that cannot be such a frame.
    """
    ds = header.dataset
    representation = int(ds.get("PixelRepresentation", 0) or 0)
    info = get_j2k_parameters(codestream)
    precision = int(info.get("precision", header.bits_stored))
    signed = bool(info.get("is_signed", representation))
    container = 1 if precision <= 8 else 2
    plane = np.asarray(decoded)
    if plane.ndim == 3 and plane.shape[2] == 1:
        plane = plane[..., 0]
    if plane.shape != (header.rows, header.columns):
        raise ValueError(
            f"decoded shape {plane.shape} is not Rows x Columns {header.rows} x {header.columns}"
        )
    if plane.dtype.kind not in "ui" or plane.dtype.itemsize != container or precision > header.bits_allocated:
        raise ValueError(
            f"decoded {plane.dtype} does not fit a {precision}-bit codestream "
            f"in {header.bits_allocated} bits"
        )
    kind = "ui"[representation]
    as_read = np.ascontiguousarray(plane).view(f"{kind}{container}")
    frame = as_read.astype(f"{kind}{header.bits_allocated // 8}")
    shift = 8 * frame.dtype.itemsize - precision
    if header.photometric in ("MONOCHROME1", "MONOCHROME2") and shift and signed != bool(representation):
        np.left_shift(frame, shift, out=frame)
        np.right_shift(frame, shift, out=frame)
    return frame


@functools.cache
def _warn_once(message: str) -> None:
    LOGGER.warning(message)


class NvImageCodecDecoder:
    """Batch JPEG 2000 decoding on one GPU with nvImageCodec (GPU backends only)."""

    name = "gpu"

    def __init__(
        self, nvimgcodec: ModuleType, *, device_id: int = 0, batch_size: int = DEFAULT_GPU_BATCH
    ) -> None:
        self._nv = nvimgcodec
        kinds = (nvimgcodec.BackendKind.GPU_ONLY, nvimgcodec.BackendKind.HYBRID_CPU_GPU)
        gpu_backends = [nvimgcodec.Backend(kind) for kind in kinds]
        self._decoder = nvimgcodec.Decoder(device_id=device_id, backends=gpu_backends)
        self._params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.UNCHANGED, allow_any_depth=True
        )
        self.batch_size = batch_size
        self._cpu = CpuDecoder()

    def decode_codestreams(self, codestreams: Sequence[bytes]) -> list[np.ndarray | None]:
        """Decode codestreams in batches into host arrays of their native type; None where one failed."""
        out: list[np.ndarray | None] = []
        for start in range(0, len(codestreams), self.batch_size):
            chunk = codestreams[start : start + self.batch_size]
            try:
                streams = [self._nv.CodeStream(c) for c in chunk]
                images: list[Any] = self._decoder.decode(streams, params=self._params)
            except RuntimeError as exc:  # CUDA errors surface as RuntimeError
                _warn_once(f"nvImageCodec batch decode failed ({exc}); those frames are decoded on the CPU")
                images = []
            if len(images) != len(chunk):  # a failed call, or a version that drops failed samples
                images = [None] * len(chunk)
            out.extend(None if image is None else np.asarray(image.cpu()) for image in images)
        return out

    def decode(
        self,
        path: str,
        header: DbtHeader,
        indices: Sequence[int],
        *,
        workers: int = 1,
        mp_context: str = "spawn",
    ) -> np.ndarray:
        """Decode ``indices`` on the GPU; other syntaxes and failed frames go through the CPU decoder."""
        if not gpu_supports(header):
            return self._cpu.decode(path, header, indices, workers=workers, mp_context=mp_context)
        codestreams = frame_codestreams(path, header, indices)
        frames: list[np.ndarray | None] = []
        for codestream, decoded in zip(codestreams, self.decode_codestreams(codestreams)):
            try:
                frames.append(None if decoded is None else as_pydicom_frame(decoded, codestream, header))
            except ValueError as exc:
                _warn_once(f"unexpected nvImageCodec output ({exc}); such frames are decoded on the CPU")
                frames.append(None)
        failed = [k for k, frame in enumerate(frames) if frame is None]
        if failed:
            _warn_once("nvImageCodec could not decode some frames; they are decoded on the CPU")
            again = [indices[k] for k in failed]
            redone = self._cpu.decode(path, header, again, workers=workers, mp_context=mp_context)
            for k, frame in zip(failed, redone):
                frames[k] = frame
        return np.stack(frames)

    def self_test(self) -> None:
        """Decode small unsigned and signed JPEG 2000 images; raise RuntimeError unless bit-exact."""
        import openjpeg

        rng = np.random.default_rng(0)
        images = [
            rng.integers(0, 1 << 12, (64, 48)).astype(np.uint16),
            rng.integers(-(1 << 11), 1 << 11, (64, 48)).astype(np.int16),
        ]
        codestreams = [bytes(openjpeg.encode(image, bits_stored=12)) for image in images]
        for image, decoded in zip(images, self.decode_codestreams(codestreams)):
            if decoded is None:
                raise RuntimeError(f"could not decode a {image.dtype} JPEG 2000 test image")
            plane = decoded[..., 0] if decoded.ndim == 3 else decoded
            if plane.dtype != image.dtype or not np.array_equal(plane, image):
                raise RuntimeError(
                    f"{image.dtype} JPEG 2000 test image decoded as {plane.dtype}, not bit-exact"
                )


def cuda_device_count() -> tuple[int, str | None]:
    """CUDA devices the driver reports, and why there are none (driver API, no framework needed)."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver (libcuda.so.1 not found)"
    status = cuda.cuInit(0)
    if status != 0:
        return 0, f"the CUDA driver did not initialise (cuInit error {status})"
    count = ctypes.c_int(0)
    status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value < 1:
        return 0, f"no CUDA device visible (cuDeviceGetCount error {status}, {count.value} devices)"
    return count.value, None


def _nvimgcodec_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.nvimgcodec") is not None
    except ModuleNotFoundError:  # no "nvidia" namespace package at all
        return False


@functools.cache
def gpu_decoder() -> tuple[NvImageCodecDecoder | None, str | None]:
    """The process's GPU decoder, or None and the reason; probed once per process."""
    if not _nvimgcodec_installed():
        return None, "nvidia-nvimgcodec is not installed (pip install 'tomosight[gpu]')"
    count, reason = cuda_device_count()
    if not count:
        return None, reason
    try:
        decoder = NvImageCodecDecoder(importlib.import_module("nvidia.nvimgcodec"))
        decoder.self_test()
    except Exception as exc:  # import errors, CUDA errors, a failed self-test: all mean "not usable"
        return None, f"nvImageCodec cannot decode JPEG 2000 on the GPU ({type(exc).__name__}: {exc})"
    return decoder, None


@functools.cache
def _report_fallback(reason: str) -> None:
    """Log once per process (and reason) that ``auto`` fell back to the CPU."""
    LOGGER.info("decoder 'auto' uses the CPU: %s", reason)


def select_decoder(prefer: str = "auto") -> FrameDecoder:
    """The decoder for ``prefer`` (``"auto"``, ``"cpu"`` or ``"gpu"``); see the module docstring."""
    check_choice("decoder", prefer, DECODER_CHOICES, DecoderConfigError)
    if prefer == "cpu":
        return CpuDecoder()
    decoder, reason = gpu_decoder()
    if decoder is not None:
        return decoder
    assert reason is not None
    if prefer == "gpu":
        raise GpuDecoderUnavailableError(reason)
    _report_fallback(reason)
    return CpuDecoder(fallback_reason=reason)


def decoder_choice(spec: str | None = None) -> str:
    """``spec``, or ``TOMOSIGHT_DECODER``, or ``"cpu"``, checked against :data:`DECODER_CHOICES`."""
    if spec is not None:
        check_choice("decoder", spec, DECODER_CHOICES, DecoderConfigError)
        return spec
    value = os.environ.get(DECODER_ENV, "cpu").strip().lower() or "cpu"
    check_choice(f"decoder in ${DECODER_ENV}", value, DECODER_CHOICES, DecoderConfigError)
    return value


def resolve_decoder(spec: FrameDecoder | str | None = None) -> FrameDecoder:
    """A decoder object as is, else :func:`select_decoder` of :func:`decoder_choice`."""
    if spec is None or isinstance(spec, str):
        return select_decoder(decoder_choice(spec))
    return spec
