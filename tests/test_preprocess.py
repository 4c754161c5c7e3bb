"""ml.preprocess: configs, strategies, geometry, mask, tensor files and the parallel manifest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import schemas
from ml import dicomio, preprocess
from ml.dicomio import load_view
from ml.preprocess import (
    PreprocessConfig,
    PreprocessConfigError,
    load_projection,
    needed_frames,
    preprocess_many,
    preprocess_view,
    write_tensor,
)
from ml.preprocess_geometry import (
    Pad,
    area_resize_axis,
    fit_to_canvas,
    to_duke_coords,
    to_model_coords,
)
from ml.preprocess_mask import breast_mask, otsu_threshold
from ml.synth.bto import BtoMeta, derived_uid, write_bto

FRAMES, ROWS, COLS = 8, 64, 52


def phantom(
    side: str = "L", rows: int = ROWS, cols: int = COLS, frames: int = FRAMES, seed: int = 0
) -> np.ndarray:
    """10-bit volume: half-ellipse breast on the ``side`` chest wall, noisy air, blob per frame."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    inside = (c / (0.8 * cols)) ** 2 + ((r - rows / 2) / (0.42 * rows)) ** 2 < 1
    vol = rng.integers(0, 40, (frames, rows, cols)).astype(np.uint16)  # air noise
    vol[:, inside] += np.uint16(450)
    for k in range(frames):  # a blob that moves with the frame, so projections differ from slices
        rr, cc = rows // 4 + (k * rows) // (2 * frames), cols // 8 + k
        vol[k, rr : rr + 4, cc : cc + 4] = 1000
    return vol if side == "L" else np.ascontiguousarray(vol[:, :, ::-1])


def write_view(tmp_path: Path, side: str = "L", name: str | None = None, **kwargs) -> Path:
    vol = phantom(side, **kwargs)
    meta = BtoMeta(
        "DBT-P00001",
        derived_uid("study", side),
        derived_uid("series", side, name),
        dt.date(2024, 1, 1),
        side,
        "CC",
    )
    return write_bto(tmp_path / (name or f"{side}.dcm"), vol, meta, transfer_syntax="explicit")


# ---------------------------------------------------------------- configuration


def test_config_rejects_typos_with_a_suggestion():
    with pytest.raises(PreprocessConfigError, match="Did you mean 'slab_mip'"):
        PreprocessConfig(strategy="slab-mip")
    with pytest.raises(PreprocessConfigError, match="Did you mean 'float16'"):
        PreprocessConfig(dtype="float61")
    for bad in (
        {"height": 0},
        {"width": 2.5},
        {"n_slices": True},
        {"slab": -1},
        {"breast_mask": "yes"},
    ):
        with pytest.raises(PreprocessConfigError):
            PreprocessConfig(**bad)


def test_strategies_are_the_contract_values():
    assert preprocess.STRATEGIES == schemas.SLICE_STRATEGIES


def test_fingerprint_is_stable_and_tracks_every_field():
    base = PreprocessConfig()
    assert base.fingerprint() == PreprocessConfig().fingerprint()
    assert len(base.fingerprint()) == 16
    variants = [
        PreprocessConfig(strategy="mip"),
        PreprocessConfig(height=128),
        PreprocessConfig(width=100),
        PreprocessConfig(n_slices=4),
        PreprocessConfig(slab=3),
        PreprocessConfig(breast_mask=True),
        PreprocessConfig(dtype="float32"),
    ]
    prints = {v.fingerprint() for v in variants}
    assert len(prints) == len(variants) and base.fingerprint() not in prints
    assert base.to_dict()["version"] == preprocess.PREPROCESS_VERSION


def test_config_round_trips_through_its_dict():
    config = PreprocessConfig(strategy="sampled", n_slices=3, breast_mask=True)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(PreprocessConfigError, match="version"):
        PreprocessConfig.from_dict(
            {**config.to_dict(), "version": preprocess.PREPROCESS_VERSION + 1}
        )
    with pytest.raises(PreprocessConfigError, match="unknown config keys"):
        PreprocessConfig.from_dict({**config.to_dict(), "colour": 1})


def test_needed_frames_per_strategy():
    assert needed_frames(9, PreprocessConfig(strategy="central")) == [4]
    assert needed_frames(9, PreprocessConfig(strategy="mip")) == list(range(9))
    assert needed_frames(9, PreprocessConfig(strategy="slab_mip", slab=3)) == [3, 4, 5]
    assert needed_frames(16, PreprocessConfig(strategy="sampled", n_slices=4)) == [2, 6, 10, 14]
    short = needed_frames(3, PreprocessConfig(strategy="sampled", n_slices=5))
    assert len(short) == 5 and sorted(short) == short and set(short) == {0, 1, 2}


# ---------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    ("strategy", "channels"), [("central", 1), ("mip", 1), ("slab_mip", 1), ("sampled", 3)]
)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_every_strategy_gives_its_shape_and_dtype(tmp_path, strategy, channels, dtype):
    config = PreprocessConfig(
        strategy=strategy, height=40, width=36, n_slices=3, slab=3, dtype=dtype
    )
    out = preprocess_view(write_view(tmp_path), "lcc", config)
    assert out.array.shape == (channels, 40, 36) and config.channels == channels
    assert out.array.dtype == np.dtype(dtype)
    assert np.isfinite(out.array).all() and out.array.min() >= 0 and out.array.max() <= 1
    assert (
        len(out.frame_indices)
        == {"central": 1, "mip": FRAMES, "slab_mip": 3, "sampled": 3}[strategy]
    )


def test_mip_is_the_maximum_of_all_frames_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "MIP_CHUNK_FRAMES", 3)  # 8 frames: chunks of 3, 3, 2
    path = write_view(tmp_path, "R")
    every = load_view(path, "all", laterality="R")
    projection = load_projection(path, "rcc", PreprocessConfig(strategy="mip"))
    assert projection.stack.shape == (1, ROWS, COLS)
    np.testing.assert_array_equal(projection.stack[0], every.pixels.max(axis=0))
    assert projection.frame_indices == tuple(range(FRAMES))
    assert not np.array_equal(projection.stack[0], every.pixels[FRAMES // 2])


def test_slab_mip_is_the_maximum_of_the_central_slab(tmp_path):
    path = write_view(tmp_path)
    projection = load_projection(path, "lcc", PreprocessConfig(strategy="slab_mip", slab=3))
    slab = load_view(path, [3, 4, 5], laterality="L").pixels
    np.testing.assert_array_equal(projection.stack[0], slab.max(axis=0))


def test_mip_chunks_follow_the_first_chunk_orientation(tmp_path, monkeypatch):
    """A volume whose pixel side flips midway is still projected in one orientation."""
    vol = phantom("L")
    vol[4:] = vol[4:, ::-1, ::-1]  # frames 4.. look like a right breast to the pixel rule
    meta = BtoMeta("P", derived_uid("s"), derived_uid("se"), dt.date(2024, 1, 1), "L", "CC")
    path = write_bto(tmp_path / "mixed.dcm", vol, meta, transfer_syntax="explicit")
    monkeypatch.setattr(preprocess, "MIP_CHUNK_FRAMES", 4)
    projection = load_projection(path, "lcc", PreprocessConfig(strategy="mip"))
    whole = load_view(path, "all", laterality="L")  # one orientation decision, on frame 0
    np.testing.assert_array_equal(projection.stack[0], whole.pixels.max(axis=0))


def test_central_decodes_only_the_central_frame(tmp_path, monkeypatch):
    path = write_view(tmp_path)
    asked: list[list[int]] = []
    real = dicomio.read_frames

    def spy(fp, indices=None, **kwargs):
        asked.append(list(indices))
        return real(fp, indices, **kwargs)

    monkeypatch.setattr(dicomio, "read_frames", spy)
    out = preprocess_view(path, "lcc", PreprocessConfig(strategy="central"))
    assert asked == [[FRAMES // 2]]
    assert out.frame_indices == (FRAMES // 2,)


def test_sampled_channels_are_the_sampled_frames(tmp_path):
    path = write_view(tmp_path)
    config = PreprocessConfig(
        strategy="sampled", n_slices=4, height=ROWS, width=COLS, dtype="float32"
    )
    out = preprocess_view(path, "lcc", config)
    frames = load_view(path, list(out.frame_indices), laterality="L").pixels
    np.testing.assert_allclose(
        out.array, frames, atol=1e-6
    )  # same size: the resize is the identity


# ---------------------------------------------------------------- geometry


def test_area_resize_averages_blocks_and_keeps_mass():
    rng = np.random.default_rng(1)
    x = rng.random((12, 9))
    thirds = area_resize_axis(x, 1 / 3, 4, axis=0)
    np.testing.assert_allclose(thirds, x.reshape(4, 3, 9).mean(axis=1))
    odd = area_resize_axis(x, 0.4, 4, axis=1)  # 9 columns -> 3.6: edges 0, 2.5, 5, 7.5, 9
    np.testing.assert_allclose(odd[:, 0], (x[:, 0] + x[:, 1] + 0.5 * x[:, 2]) / 2.5)
    np.testing.assert_allclose(odd[:, 3], (0.5 * x[:, 7] + x[:, 8]) / 1.5)  # partial last sample
    np.testing.assert_allclose(area_resize_axis(np.full((7, 5), 0.3), 0.37, 3, axis=0), 0.3)


@pytest.mark.parametrize(("side", "pad"), [("L", Pad(0, 0, 0, 16)), ("R", Pad(0, 0, 16, 0))])
def test_tall_image_is_padded_away_from_the_chest_wall(tmp_path, side, pad):
    path = write_view(tmp_path, side, rows=64, cols=32)
    config = PreprocessConfig(height=32, width=32, dtype="float32")
    out = preprocess_view(path, f"{side.lower()}cc", config)
    assert out.scale == 0.5 and out.pad == pad
    image = out.array[0]
    content = image[:, pad.left : pad.left + 16]
    assert not image[:, : pad.left].any() and not image[:, 32 - pad.right :].any()
    wall = 0 if side == "L" else -1
    assert content[8:24, wall].min() > 0.4  # tissue touches the chest-wall edge
    central = load_view(path, "central", laterality=side).pixels[0]
    np.testing.assert_allclose(content, central.reshape(32, 2, 16, 2).mean(axis=(1, 3)), atol=1e-6)


def test_wide_image_is_padded_at_the_bottom(tmp_path):
    path = write_view(tmp_path, "L", rows=32, cols=64)
    out = preprocess_view(path, "lcc", PreprocessConfig(height=32, width=32))
    assert out.pad == Pad(0, 16, 0, 0)
    assert out.array[0, :16].any() and not out.array[0, 16:].any()


def test_fit_to_canvas_rejects_bad_input():
    with pytest.raises(ValueError, match="stack"):
        fit_to_canvas(np.zeros((4, 4)), 8, 8, "L")
    with pytest.raises(ValueError, match="laterality"):
        fit_to_canvas(np.zeros((1, 4, 4)), 8, 8, "X")


def test_box_coordinates_round_trip():
    rng = np.random.default_rng(3)
    boxes = rng.uniform(0, 2000, (50, 4))
    pad = Pad(0, 12, 31, 0)
    back = to_duke_coords(to_model_coords(boxes, 0.104, pad), 0.104, pad)
    np.testing.assert_allclose(back, boxes, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(to_model_coords([100, 50, 20, 10], 0.5, pad), [81, 25, 10, 5])
    with pytest.raises(ValueError, match="4 values"):
        to_model_coords([1, 2, 3], 1.0, pad)


def test_boxes_land_on_their_lesion_in_the_tensor(tmp_path):
    """A bright square at a known Duke-frame box shows up where to_model_coords puts it."""
    vol = np.zeros((3, 96, 60), dtype=np.uint16)
    vol[:, :, 40:] = 300  # right breast: tissue against the last column
    vol[:, 20:44, 44:56] = 1023  # lesion box x=44, y=20, w=12, h=24
    meta = BtoMeta("P", derived_uid("a"), derived_uid("b"), dt.date(2024, 1, 1), "R", "CC")
    path = write_bto(tmp_path / "box.dcm", vol, meta, transfer_syntax="explicit")
    out = preprocess_view(path, "rcc", PreprocessConfig(height=48, width=48, dtype="float32"))
    x, y, w, h = to_model_coords([44, 20, 12, 24], out.scale, out.pad)
    rows, cols = np.nonzero(out.array[0] > 0.99)
    assert (cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()) == (
        x,
        y,
        w,
        h,
    )


# ---------------------------------------------------------------- mask


def test_breast_mask_zeroes_air_and_keeps_tissue(tmp_path):
    path = write_view(tmp_path)
    plain = preprocess_view(path, "lcc", PreprocessConfig(height=ROWS, width=COLS, dtype="float32"))
    masked = preprocess_view(
        path, "lcc", PreprocessConfig(height=ROWS, width=COLS, dtype="float32", breast_mask=True)
    )
    r, c = np.mgrid[0:ROWS, 0:COLS]
    ellipse = (c / (0.8 * COLS)) ** 2 + ((r - ROWS / 2) / (0.42 * ROWS)) ** 2
    air, tissue = ellipse > 1.3, ellipse < 0.7
    assert plain.array[0][air].max() > 0.01  # noisy air before masking
    assert not masked.array[0][air].any()
    np.testing.assert_array_equal(masked.array[0][tissue], plain.array[0][tissue])


def test_mask_of_a_flat_image_keeps_everything():
    assert breast_mask(np.full((10, 10), 0.5)).all()
    with pytest.raises(ValueError, match="2-D"):
        breast_mask(np.zeros((2, 3, 4)))


def test_otsu_splits_two_modes():
    values = np.concatenate([np.full(100, 0.1), np.full(50, 0.8)])
    assert 0.1 < otsu_threshold(values) < 0.8


# ---------------------------------------------------------------- tensors and the manifest


def test_write_tensor_is_atomic_and_memory_mappable(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)
    path = write_tensor(array, tmp_path / "sub" / "t.npy")
    loaded = np.load(path, mmap_mode="r")
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, array)
    assert [p.name for p in path.parent.iterdir()] == ["t.npy"]  # no temp file left behind
    with pytest.raises(ValueError, match=r"\.npy"):
        write_tensor(array, tmp_path / "t.bin")


def _items(tmp_path: Path, out_dir: str) -> list[tuple[str, str, str]]:
    left, right = write_view(tmp_path, "L"), write_view(tmp_path, "R")
    return [
        (str(p), v, str(tmp_path / out_dir / f"{i}.npy"))
        for i, (p, v) in enumerate([(left, "lcc"), (right, "rmlo1")])
    ]


def test_parallel_equals_sequential_and_tensors_match_rows(tmp_path):
    config = PreprocessConfig(strategy="sampled", n_slices=3, height=32, width=40)
    sequential = preprocess_many(_items(tmp_path, "seq"), config)
    parallel = preprocess_many(_items(tmp_path, "par"), config, workers=2)
    for seq, par in zip(sequential, parallel, strict=True):
        assert seq["status"] == "ok"
        assert {k: v for k, v in seq.items() if k != "tensor_path"} == {
            k: v for k, v in par.items() if k != "tensor_path"
        }
        a, b = np.load(seq["tensor_path"]), np.load(par["tensor_path"])
        np.testing.assert_array_equal(a, b)
        assert a.shape == (seq["n_slices"], seq["height"], seq["width"]) == (3, 32, 40)
    assert [r["laterality"] for r in sequential] == ["L", "R"]
    assert (sequential[0]["pad_left"], sequential[0]["pad_right"]) == (0, 14)  # 64x52 -> 32x26
    assert (sequential[1]["pad_left"], sequential[1]["pad_right"]) == (14, 0)


def test_failures_become_rows_and_nothing_is_lost(tmp_path):
    good = write_view(tmp_path)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not a dicom file at all" * 10)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-500])
    missing = tmp_path / "missing.dcm"
    items = [
        (garbage, "lcc", tmp_path / "out" / "0.npy"),
        (good, "lcc", tmp_path / "out" / "1.npy"),
        (truncated, "lcc", tmp_path / "out" / "2.npy"),
        (missing, "rcc", tmp_path / "out" / "3.npy"),
    ]
    seen: list[str] = []
    rows = preprocess_many(
        items, PreprocessConfig(), workers=2, progress=lambda row: seen.append(row["source"])
    )
    assert [r["status"] for r in rows] == ["failed", "ok", "failed", "failed"]
    assert [r["reason"] for r in rows] == ["not_dicom", None, "truncated", "missing_file"]
    assert all(r["error"] for r in rows if r["status"] == "failed")
    assert sorted(seen) == sorted(str(p) for p, _, _ in items)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1.npy"]


def test_bad_items_are_refused_before_any_work(tmp_path):
    path = write_view(tmp_path)
    with pytest.raises(ValueError, match="does not start with l or r"):
        preprocess_many([(path, "cc", tmp_path / "a.npy")], PreprocessConfig())
    with pytest.raises(ValueError, match="same tensor"):
        preprocess_many([(path, "lcc", tmp_path / "a.npy")] * 2, PreprocessConfig())
    assert not (tmp_path / "a.npy").exists()


def test_preprocessing_is_deterministic(tmp_path):
    config = PreprocessConfig(strategy="mip", breast_mask=True, height=40, width=32)
    first = preprocess_many(_items(tmp_path, "a"), config)
    second = preprocess_many(_items(tmp_path, "b"), config)
    for a, b in zip(first, second, strict=True):
        assert Path(a["tensor_path"]).read_bytes() == Path(b["tensor_path"]).read_bytes()
        assert a["preprocess_fingerprint"] == b["preprocess_fingerprint"] == config.fingerprint()


def test_manifest_rows_fill_the_preprocessed_contract(tmp_path):
    rows = preprocess_many(_items(tmp_path, "out"), PreprocessConfig(strategy="slab_mip"))
    table = pl.DataFrame(
        {
            "StudyUID": ["DBT-S00001", "DBT-S00001"],
            "View": [r["view"] for r in rows],
            "slice_strategy": [r["slice_strategy"] for r in rows],
            "height": [r["height"] for r in rows],
            "width": [r["width"] for r in rows],
            "n_slices": [r["n_slices"] for r in rows],
            "tensor_uri": [r["tensor_path"] for r in rows],
        }
    )
    schemas.validate(table, schemas.Preprocessed)
