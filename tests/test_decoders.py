"""ml.decoders: CPU/GPU frame decoders, fallback rules, codestream extraction, pydicom dtype parity.

The GPU path runs only where nvImageCodec and a CUDA device are present (``gpu`` marker
tests are skipped otherwise); everywhere else the fallback rules are what is tested.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import openjpeg
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import iter_pixels
from pydicom.uid import JPEG2000Lossless

from ml import decoders
from ml.decoders import (
    DECODER_ENV,
    CpuDecoder,
    DecoderConfigError,
    GpuDecoderUnavailableError,
    as_pydicom_frame,
    gpu_decoder,
    gpu_supports,
    resolve_decoder,
    select_decoder,
)
from ml.dicomio import UnsupportedTransferSyntaxError, frame_codestreams, load_view, read_frames, read_header
from ml.preprocess import PreprocessConfig, preprocess_many, preprocess_view
from ml.synth.bto import BtoMeta, build_dataset, derived_uid, write_bto

GPU_USABLE = gpu_decoder()[0] is not None
GPU_REASON = gpu_decoder()[1] or ""
needs_gpu = pytest.mark.skipif(not GPU_USABLE, reason=f"GPU decoder unavailable: {GPU_REASON}")
cpu_only = pytest.mark.skipif(GPU_USABLE, reason="a GPU decoder is usable here, so nothing falls back")

FRAMES, ROWS, COLS = 5, 64, 48


def volume(seed: int = 0, bits: int = 10) -> np.ndarray:
    """Small breast-like volume: tissue ramp from the chest wall plus noise, ``bits`` deep."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.9, 0.1, COLS)[None, None, :] * ((1 << bits) - 1)
    vol = ramp + rng.normal(0, 20, (FRAMES, ROWS, COLS))
    return np.clip(vol, 0, (1 << bits) - 1).astype(np.uint16)


def meta() -> BtoMeta:
    study, series = derived_uid("study", 7), derived_uid("series", 7)
    return BtoMeta("DBT-P00001", study, series, dt.date(2024, 3, 1), "L", "CC")


def write(tmp_path: Path, vol: np.ndarray, syntax: str, name: str = "1-1.dcm") -> Path:
    return write_bto(tmp_path / name, vol, meta(), transfer_syntax=syntax)


def pydicom_frames(path: Path, indices: list[int]) -> np.ndarray:
    """The pre-decoder implementation of read_frames: pydicom's raw decode, default plugins."""
    return np.stack(list(iter_pixels(path, indices=indices, raw=True)))


def write_j2k(
    tmp_path: Path,
    frames: list[np.ndarray],
    *,
    precision: int,
    representation: int,
    bits_allocated: int = 16,
    fragments_per_frame: int = 1,
    has_bot: bool = True,
    name: str = "j2k.dcm",
) -> Path:
    """A BTO whose J2K codestreams are encoded here, so signedness/precision may differ from the tags."""
    stack = np.stack(frames)
    ds = build_dataset(np.zeros(stack.shape, np.uint16), meta())
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, precision, precision - 1
    ds.PixelRepresentation = representation
    ds.LossyImageCompression = "00"
    codestreams = [bytes(openjpeg.encode(frame, bits_stored=precision)) for frame in frames]
    ds.PixelData = encapsulate(codestreams, fragments_per_frame=fragments_per_frame, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------- selection and fallback


@cpu_only
def test_auto_falls_back_to_cpu_and_logs_the_reason_once(caplog):
    decoders._report_fallback.cache_clear()
    with caplog.at_level(logging.INFO, logger="ml.decoders"):
        first, second = select_decoder("auto"), select_decoder("auto")
    assert isinstance(first, CpuDecoder) and isinstance(second, CpuDecoder)
    assert first.fallback_reason == GPU_REASON and GPU_REASON
    if not decoders._nvimgcodec_installed():
        assert "not installed" in GPU_REASON and "gpu" in GPU_REASON
    elif decoders.cuda_device_count()[0] == 0:
        assert GPU_REASON == decoders.cuda_device_count()[1]
    logged = [r.getMessage() for r in caplog.records if GPU_REASON in r.getMessage()]
    assert len(logged) == 1, logged


@cpu_only
def test_explicit_gpu_request_raises_a_typed_error(tmp_path):
    with pytest.raises(GpuDecoderUnavailableError, match="auto") as info:
        select_decoder("gpu")
    assert info.value.reason == GPU_REASON
    path = write(tmp_path, volume(), "jpeg2000")
    with pytest.raises(GpuDecoderUnavailableError):
        read_frames(path, [0], decoder="gpu")


@cpu_only
def test_environment_variable_chooses_the_default(tmp_path, monkeypatch):
    path = write(tmp_path, volume(), "jpeg2000")
    monkeypatch.setenv(DECODER_ENV, "gpu")
    with pytest.raises(GpuDecoderUnavailableError):
        read_frames(path, [0])
    np.testing.assert_array_equal(read_frames(path, [0], decoder="cpu"), volume()[[0]])  # argument wins
    monkeypatch.setenv(DECODER_ENV, "AUTO")
    assert isinstance(resolve_decoder(None), CpuDecoder)
    monkeypatch.delenv(DECODER_ENV)
    assert resolve_decoder(None) == CpuDecoder()


def test_cpu_choice_and_decoder_objects_pass_through():
    assert select_decoder("cpu") == CpuDecoder(fallback_reason=None)
    mine = CpuDecoder()
    assert resolve_decoder(mine) is mine


def test_unknown_decoder_names_are_refused_with_a_hint(tmp_path, monkeypatch):
    with pytest.raises(DecoderConfigError, match="Did you mean 'gpu'"):
        select_decoder("gpus")
    monkeypatch.setenv(DECODER_ENV, "cuda")
    with pytest.raises(DecoderConfigError, match=DECODER_ENV):
        resolve_decoder(None)
    path = write(tmp_path, volume(), "explicit")
    out = tmp_path / "t.npy"
    with pytest.raises(DecoderConfigError):
        preprocess_many([(path, "lcc", out)], PreprocessConfig(), decoder="cpuu")
    assert not out.exists()  # refused before any work


# ---------------------------------------------------------------- CPU decoder parity


@pytest.mark.parametrize("syntax", ["explicit", "jpeg2000", "jpegls", "rle"])
def test_cpu_decoder_equals_pydicom_and_read_frames(tmp_path, syntax):
    vol = volume(seed=3)
    path = write(tmp_path, vol, syntax)
    header = read_header(path)
    indices = [4, 0, 2]
    expected = pydicom_frames(path, indices)
    got = CpuDecoder().decode(str(path), header, indices)
    assert got.dtype == expected.dtype == np.uint16
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, vol[indices])
    for choice in ("cpu", "auto", None):
        np.testing.assert_array_equal(read_frames(path, indices, decoder=choice), expected)


def test_cpu_decoder_in_processes_equals_one_process(tmp_path):
    path = write(tmp_path, volume(seed=4), "jpeg2000")
    header = read_header(path)
    np.testing.assert_array_equal(
        CpuDecoder().decode(str(path), header, range(FRAMES), workers=2), pydicom_frames(path, list(range(FRAMES)))
    )


def test_load_view_and_preprocessing_give_the_same_pixels_with_auto(tmp_path):
    path = write(tmp_path, volume(seed=5), "jpeg2000")
    cpu = load_view(path, "all", laterality="L", decoder="cpu")
    auto = load_view(path, "all", laterality="L", decoder="auto")
    np.testing.assert_array_equal(auto.pixels, cpu.pixels)
    config = PreprocessConfig(strategy="sampled", n_slices=3, height=32, width=24)
    np.testing.assert_array_equal(
        preprocess_view(path, "lcc", config, "auto").array, preprocess_view(path, "lcc", config, "cpu").array
    )


# ---------------------------------------------------------------- codestream extraction


@pytest.mark.parametrize(
    ("fragments_per_frame", "has_bot"), [(1, True), (1, False), (3, True), (3, False)]
)
def test_frame_codestreams_are_valid_j2k_codestreams(tmp_path, fragments_per_frame, has_bot):
    vol = volume(seed=6)
    path = write_j2k(
        tmp_path, list(vol), precision=10, representation=0, fragments_per_frame=fragments_per_frame, has_bot=has_bot
    )
    header = read_header(path)
    ds_frames = list(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=FRAMES))
    codestreams = frame_codestreams(path, header, range(FRAMES))
    assert codestreams == ds_frames  # pydicom's own frame splitting agrees
    for index, codestream in enumerate(codestreams):
        assert codestream[:4] == b"\xff\x4f\xff\x51"  # SOC then SIZ
        assert codestream.rstrip(b"\x00").endswith(b"\xff\xd9")  # EOC
        np.testing.assert_array_equal(openjpeg.decode(codestream), vol[index])
    assert frame_codestreams(path, header, [3, 1]) == [codestreams[3], codestreams[1]]


def test_frame_codestreams_of_synthetic_writer_and_refusals(tmp_path):
    vol = volume(seed=7)
    path = write(tmp_path, vol, "jpeg2000")
    header = read_header(path)
    for index, codestream in enumerate(frame_codestreams(path, header, range(FRAMES))):
        assert codestream.startswith(b"\xff\x4f")
        np.testing.assert_array_equal(openjpeg.decode(codestream), vol[index])
    with pytest.raises(IndexError):
        frame_codestreams(path, header, [FRAMES])
    raw = write(tmp_path, vol, "explicit", name="raw.dcm")
    with pytest.raises(UnsupportedTransferSyntaxError):
        frame_codestreams(raw, read_header(raw), [0])


# ---------------------------------------------------------------- pydicom dtype/signedness parity


def _frames(kind: str, precision: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "signed":
        low, high, dtype = -(1 << (precision - 1)), 1 << (precision - 1), np.int16
    else:
        low, high, dtype = 0, 1 << precision, np.uint8 if precision <= 8 else np.uint16
    return [rng.integers(low, high, (ROWS, COLS)).astype(dtype) for _ in range(3)]


@pytest.mark.parametrize(
    ("codestream_kind", "precision", "representation", "bits_allocated"),
    [
        ("unsigned", 10, 0, 16),  # Duke-like
        ("unsigned", 16, 0, 16),
        ("signed", 13, 1, 16),
        ("unsigned", 13, 1, 16),  # PixelRepresentation 1, unsigned codestream: pydicom sign-extends
        ("signed", 12, 0, 16),  # PixelRepresentation 0, signed codestream: pydicom masks
        ("unsigned", 8, 0, 16),  # 1-byte codestream samples cast into 16 bits allocated
        ("unsigned", 8, 0, 8),
    ],
)
def test_native_codestream_output_becomes_pydicoms_frame(tmp_path, codestream_kind, precision, representation, bits_allocated):
    frames = _frames(codestream_kind, precision, seed=precision)
    path = write_j2k(tmp_path, frames, precision=precision, representation=representation, bits_allocated=bits_allocated)
    header = read_header(path)
    expected = pydicom_frames(path, [0, 1, 2])
    for k, codestream in enumerate(frame_codestreams(path, header, [0, 1, 2])):
        native = openjpeg.decode(codestream)  # the codestream's own sample type, as nvImageCodec returns it
        got = as_pydicom_frame(native[..., None], codestream, header)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected[k])


def test_unexpected_codec_output_is_refused(tmp_path):
    path = write(tmp_path, volume(), "jpeg2000")
    header = read_header(path)
    codestream = frame_codestreams(path, header, [0])[0]
    native = openjpeg.decode(codestream)
    with pytest.raises(ValueError, match="shape"):
        as_pydicom_frame(native[:-1], codestream, header)
    with pytest.raises(ValueError, match="does not fit"):
        as_pydicom_frame(native.astype(np.uint8), codestream, header)


def test_gpu_handles_only_single_sample_jpeg2000(tmp_path):
    vol = volume()
    for syntax, expected in (("jpeg2000", True), ("explicit", False), ("jpegls", False), ("rle", False)):
        path = write(tmp_path, vol, syntax, name=f"{syntax}.dcm")
        assert gpu_supports(read_header(path)) is expected


# ---------------------------------------------------------------- the GPU path itself


@needs_gpu
@pytest.mark.parametrize(
    ("codestream_kind", "precision", "representation", "fragments_per_frame", "has_bot"),
    [("unsigned", 10, 0, 1, True), ("unsigned", 16, 0, 3, False), ("signed", 13, 1, 1, True), ("signed", 12, 0, 2, True)],
)
def test_gpu_decoder_is_bit_exact_with_cpu(tmp_path, codestream_kind, precision, representation, fragments_per_frame, has_bot):
    frames = _frames(codestream_kind, precision, seed=11) * 3  # 9 frames
    path = write_j2k(
        tmp_path, frames, precision=precision, representation=representation,
        fragments_per_frame=fragments_per_frame, has_bot=has_bot,
    )  # fmt: skip
    header = read_header(path)
    gpu = select_decoder("gpu")
    assert gpu.name == "gpu"
    indices = [8, 0, 3, 3, 5]
    expected = CpuDecoder().decode(str(path), header, indices)
    for batch_size in (1, 2, 32):
        gpu.batch_size = batch_size
        got = gpu.decode(str(path), header, indices)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        for k in range(len(indices)):
            np.testing.assert_array_equal(got[k], expected[k], err_msg=f"frame {indices[k]}, batch {batch_size}")
    gpu.batch_size = decoders.DEFAULT_GPU_BATCH


@needs_gpu
def test_gpu_decoder_routes_other_syntaxes_to_the_cpu_and_auto_picks_it(tmp_path):
    vol = volume(seed=12)
    assert select_decoder("auto").name == "gpu"
    for syntax in ("explicit", "jpegls", "jpeg2000"):
        path = write(tmp_path, vol, syntax, name=f"{syntax}.dcm")
        np.testing.assert_array_equal(read_frames(path, decoder="gpu"), read_frames(path, decoder="cpu"))
