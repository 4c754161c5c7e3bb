"""DBTex FROC: golden example, semantics, a randomised cross-check, bad input and the CLI."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from dbt_assets import cli
from ml.froc import FrocInputError, FrocResult, evaluate, match_predictions
from ml.froc_io import BOXES, PREDICTIONS, read_table
from ml.froc_plot import plot_froc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from froc_reference import reference_evaluate  # noqa: E402

# Golden example of the Duke DBT spec, section 4.7.
LABELS = """PatientID,StudyUID,View,Normal,Actionable,Benign,Cancer
P1,S1,lcc,0,0,0,1
P1,S1,lmlo,0,0,0,1
P2,S2,rcc,1,0,0,0
P2,S2,rmlo,1,0,0,0
"""
BOXES_CSV = """PatientID,StudyUID,View,Subject,Slice,X,Y,Width,Height,Class,AD,VolumeSlices
P1,S1,lcc,0,30,100,1000,200,150,cancer,0,60
P1,S1,lcc,0,34,180,1040,80,60,cancer,0,60
P1,S1,lmlo,0,20,300,900,400,300,cancer,1,48
"""
PREDS = """PatientID,StudyUID,View,X,Width,Y,Height,Z,Depth,Score
P1,S1,lcc,1000,100,2000,100,30,0,0.95
P1,S1,lcc,160,100,1022,100,32,0,0.90
P2,S2,rcc,1500,100,900,100,30,0,0.80
P1,S1,lcc,170,100,1020,100,48,2,0.70
P1,S1,lmlo,850,100,250,100,20,0,0.65
P1,S1,lcc,1200,100,300,100,30,0,0.62
P1,S1,lmlo,700,100,1000,100,20,0,0.60
P2,S2,rcc,1400,100,700,100,30,0,0.55
P1,S1,lmlo,450,100,1000,100,33,0,0.50
P2,S2,rmlo,1300,100,600,100,30,0,0.45
P2,S2,rmlo,1400,100,800,100,30,0,0.40
P2,S2,rcc,1450,100,950,100,30,0,0.35
P1,S1,lcc,150,100,1150,100,30,0,0.30
P1,S1,lmlo,1150,100,1450,100,20,0,0.25
P1,S1,lcc,150,100,1025,100,14,0,0.20
P2,S2,rcc,1600,50,700,50,10,0,0.10
"""
PRED_HEADER = "StudyUID,View,X,Y,Width,Height,Z,Depth,Score\n"
BOX_HEADER = "StudyUID,View,X,Y,Width,Height,Slice,VolumeSlices\n"
GOLDEN_GTIDS = [-1, 1, -1, 1, -1, -1, 2, -1, -1, -1, -1, -1, 0, -1, -1, -1]


def write(folder: Path, name: str, text: str, newline: str = "\n") -> Path:
    """Write ``text`` to ``folder/name`` with the given line ending."""
    path = folder / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


@pytest.fixture
def golden(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The golden labels, boxes and predictions CSVs."""
    return (
        write(tmp_path, "labels.csv", LABELS),
        write(tmp_path, "boxes.csv", BOXES_CSV),
        write(tmp_path, "preds.csv", PREDS),
    )


def assert_golden(result: FrocResult) -> None:
    """The expected values of the spec, compared exactly."""
    assert result.sensitivity_at_2_fps_all == 0.9333333333333333
    assert dict(result.sensitivity_at_fps) == {"1": 0.5, "2": 1.0, "3": 1.0, "4": 1.0}
    assert result.mean_sensitivity == 0.875
    assert result.curve_all.fps.tolist() == [0, 0.25, 0.5, 1.0, 2.25]
    assert result.curve_all.sensitivity.tolist() == [0, 1 / 3, 1 / 3, 2 / 3, 1]
    assert result.curve_positive.fps.tolist() == [0, 0.5, 0.5, 1.5, 2.0, 3.0]
    assert result.curve_positive.sensitivity.tolist() == [0, 1 / 3, 1 / 3, 2 / 3, 1, 1]
    assert (result.n_boxes, result.n_predictions, result.n_true_positives) == (3, 16, 4)
    assert (result.curve_all.n_volumes, result.curve_positive.n_volumes) == (4, 2)


# --- golden example ---------------------------------------------------------------------


def test_golden_example(golden: tuple[Path, Path, Path]) -> None:
    assert_golden(evaluate(*golden))


def test_golden_matching(golden: tuple[Path, Path, Path]) -> None:
    _, boxes, preds = golden
    gtids = match_predictions(read_table(boxes, BOXES), read_table(preds, PREDICTIONS))
    assert gtids.tolist() == GOLDEN_GTIDS


def test_golden_reference(golden: tuple[Path, Path, Path]) -> None:
    ref = reference_evaluate(*golden)
    assert ref["mean_sensitivity"] == 0.875
    assert ref["sensitivity_at_2_fps_all"] == 0.9333333333333333
    third = 1 / 3
    assert ref["curve_positive"] == [
        (0, 0), (0.5, third), (0.5, third), (1.5, 2 * third), (2, 1), (3, 1)
    ]


def test_golden_crlf_bom_and_column_order(tmp_path: Path) -> None:
    header, *rows = PREDS.splitlines()
    names = header.split(",")
    order = ["Score", "View", "Depth", "Z", "Height", "Y", "Width", "X", "StudyUID"]  # no PatientID
    shuffled = [",".join(order)] + [
        ",".join(dict(zip(names, row.split(",")))[name] for name in order) for row in rows
    ]
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + LABELS.replace("\n", "\r\n").encode())
    result = evaluate(
        labels,
        write(tmp_path, "boxes.csv", BOXES_CSV, "\r\n"),
        write(tmp_path, "preds.csv", "\n".join(shuffled) + "\n", "\r\n"),
    )
    assert_golden(result)


def test_golden_from_dataframes(golden: tuple[Path, Path, Path]) -> None:
    labels, boxes, preds = golden
    assert_golden(evaluate(pl.read_csv(labels), pl.read_csv(boxes), pl.read_csv(preds)))
    assert_golden(evaluate(pd.read_csv(labels), pd.read_csv(boxes), pd.read_csv(str(preds))))
    assert_golden(evaluate(str(labels), boxes, pl.read_csv(preds, infer_schema=False)))


def test_result_is_frozen_and_json_ready(golden: tuple[Path, Path, Path]) -> None:
    result = evaluate(*golden)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.mean_sensitivity = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.curve_all.fps[0] = 1.0
    with pytest.raises(TypeError):
        result.sensitivity_at_fps["1"] = 1.0  # type: ignore[index]
    assert json.loads(json.dumps(result.to_dict())) == {
        "mean_sensitivity": 0.875,
        "sensitivity_at_fps": {"1": 0.5, "2": 1.0, "3": 1.0, "4": 1.0},
        "sensitivity_at_2_fps_all": 0.9333333333333333,
    }


# --- single rules -----------------------------------------------------------------------


def frames(boxes: list[tuple], preds: list[tuple]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Study S1 boxes ``(View, X, Y, W, H, Slice, VolumeSlices)``, predictions
    ``(View, X, Y, W, H, Z, Depth, Score)``."""
    box = pl.DataFrame(
        boxes, schema=["View", "X", "Y", "Width", "Height", "Slice", "VolumeSlices"], orient="row"
    ).with_columns(StudyUID=pl.lit("S1"))
    pred = pl.DataFrame(
        preds, schema=["View", "X", "Y", "Width", "Height", "Z", "Depth", "Score"], orient="row"
    ).with_columns(StudyUID=pl.lit("S1"))
    return box, pred


def matched(boxes: list[tuple], preds: list[tuple]) -> list[int]:
    box, pred = frames(boxes, preds)
    return match_predictions(read_table(box, BOXES), read_table(pred, PREDICTIONS)).tolist()


def test_tie_goes_to_first_box_in_csv_order() -> None:
    twin = ("lcc", 100, 100, 50, 50, 10, 40)
    assert matched([twin, twin], [("lcc", 100, 100, 50, 50, 10, 0, 0.5)]) == [0]
    # Equidistant boxes left and right of the prediction: the first row wins either way.
    left, right = ("lcc", 0, 0, 20, 20, 10, 40), ("lcc", 100, 0, 20, 20, 10, 40)
    pred = ("lcc", 50, 0, 20, 20, 10, 0, 0.5)
    assert matched([left, right], [pred]) == [0]
    assert matched([right, left], [pred]) == [0]


def test_nearest_in_3d_not_first_hit() -> None:
    first = ("lcc", 0, 0, 20, 20, 10, 40)  # nearest in-plane (0 px) but 8 slices off
    second = ("lcc", 5, 0, 20, 20, 2, 40)  # 5 px away in-plane, on the slice: nearer in 3-D
    assert matched([first, second], [("lcc", 0, 0, 20, 20, 2, 0, 0.5)]) == [1]


def test_slice_tolerance_comes_from_first_box_of_the_volume() -> None:
    boxes = [("lcc", 0, 0, 20, 20, 10, 40), ("lcc", 1000, 0, 20, 20, 50, 80)]  # tol 10, not 20
    preds = [("lcc", 1000, 0, 20, 20, 65, 0, 0.5), ("lcc", 1000, 0, 20, 20, 60, 0, 0.4)]
    assert matched(boxes, preds) == [-1, 1]


def test_boundaries_are_inclusive_and_depth_minus_one_is_harmless() -> None:
    box = ("lmlo", 0, 0, 20, 20, 10, 40)  # centre (10, 10), radius 100, tol 10
    preds = [
        ("lmlo", 60, 80, 20, 20, 20, 0, 0.9),  # planar exactly 100, dz exactly 10
        ("lmlo", 60, 81, 20, 20, 10, 0, 0.8),  # planar just over 100
        ("lmlo", 0, 0, 20, 20, 21, -1, 0.7),  # centre slice 20.5: dz 10.5
        ("lmlo", 0, 0, 20, 20, 20, 1, 0.6),  # centre slice 20.5 again, Depth +1
        ("lmlo", 0, 0, 20, 20, 1, -1, 0.5),  # centre slice 0.5: dz 9.5
    ]
    assert matched([box], preds) == [0, -1, -1, -1, 0]


def test_keys_match_exactly_and_unlabelled_fps_count(tmp_path: Path) -> None:
    labels = write(tmp_path, "l.csv", "StudyUID,View\nS1,lcc\nS1,rcc\n")
    boxes = write(tmp_path, "b.csv", BOX_HEADER + "S1,lcc,0,0,10,10,5,20\n")
    preds = write(
        tmp_path,
        "p.csv",
        PRED_HEADER + "S1,lcc,0,0,10,10,5,0,0.5\n"
        "S9,lcc,0,0,10,10,5,0,0.9\n"  # unlabelled volume: an FP, not in the denominator
        "S1,lcc1,0,0,10,10,5,0,0.8\n",  # another volume (repeat view): FP, no GT there
    )
    result = evaluate(labels, boxes, preds)
    assert result.n_true_positives == 1
    assert result.curve_all.fps.tolist() == [0.0, 1.0, 1.0]  # 2 FPs / 2 label rows
    assert result.curve_positive.fps.tolist() == [0.0, 0.0, 0.0]  # both FPs off positive volumes
    assert result.curve_positive.sensitivity.tolist() == [0.0, 1.0, 1.0]


def test_no_true_positive_gives_zero(tmp_path: Path) -> None:
    labels = write(tmp_path, "l.csv", LABELS)
    boxes = write(tmp_path, "b.csv", BOXES_CSV)
    preds = write(tmp_path, "p.csv", PRED_HEADER + "S1,lcc,2000,0,9,9,1,1,0.3\n")
    result = evaluate(labels, boxes, preds)
    assert result.mean_sensitivity == 0.0 and result.sensitivity_at_2_fps_all == 0.0
    assert result.curve_all.fps.tolist() == [0.0, 0.25]


# --- randomised cross-check against the per-prediction reference ------------------------

VIEWS = ("lcc", "lmlo", "rcc", "rmlo", "rmlo1")
SHIFTS = (10, 20, 30)
TIED_SCORES = (0.1, 0.3, 0.5, 0.7, 0.9)


def centred(rng: np.random.Generator, centre: float) -> tuple[int, int]:
    """An integer ``(start, size)`` whose centre ``start + size / 2`` is exactly ``centre``."""
    size = int(rng.integers(10, 200))
    if (2 * centre - size) % 2:
        size += 1
    return int(centre - size / 2), size


def random_case(rng: np.random.Generator, folder: Path) -> dict[str, int]:
    """Write one random labels/boxes/predictions triple; returns what it exercised."""
    studies = range(int(rng.integers(1, 4)))
    volumes = [(f"S{s}", v) for s in studies for v in VIEWS if rng.random() < 0.7]
    volumes = volumes or [("S0", "lcc")]
    positive = [v for v in volumes if rng.random() < 0.5] or volumes[:1]
    boxes: list[tuple] = []
    for key in positive:
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(5, 40))  # 6k x 8k boxes have an exact radius of 5k
            w, h = (6 * k, 8 * k) if rng.random() < 0.4 else map(int, rng.integers(20, 260, 2))
            x, y, slice_, n_slices = map(int, rng.integers([0, 0, 0, 12], [1500, 1500, 60, 90]))
            box = (*key, x, y, w, h, slice_, n_slices)
            boxes.append(box)
            if rng.random() < 0.15:
                boxes.append(box)  # identical twin: an exact distance tie
            if rng.random() < 0.15:
                boxes.append((*box[:2], box[2] + 2 * int(rng.choice(SHIFTS)), *box[3:]))  # mirrored
            if rng.random() < 0.2:  # close in-plane, other slice: 3-D and planar nearest differ
                near = box[2] + int(rng.integers(-30, 30)), box[6] + int(rng.integers(-9, 9))
                boxes.append((*box[:2], near[0], *box[3:6], near[1], box[7]))
    labels = [v for v in volumes if rng.random() < 0.85] or positive[:1]
    labels += [v for v in positive if v not in labels and rng.random() < 0.5]
    labels += [] if set(labels) & set(positive) else positive[:1]  # a positive denominator
    stats = {"no_tp_case": 0, "boundary": 0}
    ties = rng.random() < 0.5
    preds = []
    for _ in range(int(rng.integers(1, 40))):
        score = float(rng.choice(TIED_SCORES)) if ties else round(float(rng.random()), 3)
        if rng.random() < 0.25:  # anywhere, on any volume, maybe one missing from the labels
            key = volumes[int(rng.integers(len(volumes)))] if rng.random() < 0.8 else ("S99", "rcc")
            x, y, z, depth = map(int, rng.integers([0, 0, 0, -1], [1800, 1800, 60, 4]))
            preds.append((*key, x, y, 50, 60, z, depth, score))
            continue
        g = boxes[int(rng.integers(len(boxes)))]
        cx, cy = g[2] + g[4] / 2, g[3] + g[5] / 2
        radius = max(np.hypot(g[4], g[5]) / 2, 100.0)
        mode = rng.integers(4)
        if mode == 0:  # exactly on the planar boundary (3-4-5 offsets)
            unit = radius / 5
            ox, oy = 3 * unit * rng.choice([-1, 1]), 4 * unit * rng.choice([-1, 1])
            stats["boundary"] += 1
        elif mode == 1:  # just outside
            ox, oy = radius + 0.5, 0.0
        elif mode == 2:  # maybe midway to a mirrored box: another exact tie
            ox, oy = float(rng.choice(SHIFTS)), 0.0
        else:
            ox, oy = (float(v) for v in rng.integers(-150, 150, 2))
        x, w = centred(rng, round((cx + ox) * 2) / 2)
        y, h = centred(rng, round((cy + oy) * 2) / 2)
        depth = int(rng.integers(-1, 4))
        tol = next(b for b in boxes if b[:2] == g[:2])[7] / 4
        dz = float(rng.choice([0.0, tol, -tol, tol + 0.5, float(rng.integers(-20, 20))]))
        z = int(np.floor(g[6] + dz - depth / 2))
        preds.append((*g[:2], x, y, w, h, z, depth, score))
        if rng.random() < 0.2:
            preds.append(preds[-1])  # duplicate prediction
    if rng.random() < 0.1:  # a case without any true positive
        preds = [(*p[:2], p[2] + 5000, *p[3:]) for p in preds]
        stats["no_tp_case"] = 1
    write(folder, "labels.csv", "StudyUID,View\n" + "".join(f"{s},{v}\n" for s, v in labels))
    write(folder, "boxes.csv", BOX_HEADER + "".join(",".join(map(str, b)) + "\n" for b in boxes))
    write(
        folder,
        "preds.csv",
        "PatientID," + PRED_HEADER + "".join("P," + ",".join(map(str, p)) + "\n" for p in preds),
    )
    return stats


def test_random_cases_match_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(20240104)
    seen = {"no_tp_case": 0, "boundary": 0, "tp": 0}
    for case in range(300):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        stats = random_case(rng, folder)
        paths = (folder / "labels.csv", folder / "boxes.csv", folder / "preds.csv")
        got, want = evaluate(*paths), reference_evaluate(*paths)
        for name in ("no_tp_case", "boundary"):
            seen[name] += stats[name]
        seen["tp"] += got.n_true_positives > 0
        assert got.mean_sensitivity == want["mean_sensitivity"], case
        assert dict(got.sensitivity_at_fps) == want["sensitivity_at_fps"], case
        assert got.sensitivity_at_2_fps_all == want["sensitivity_at_2_fps_all"], case
        for curve, name in ((got.curve_all, "curve_all"), (got.curve_positive, "curve_positive")):
            assert list(zip(curve.fps.tolist(), curve.sensitivity.tolist())) == want[name], case
    assert seen["tp"] >= 100 and seen["no_tp_case"] >= 5 and seen["boundary"] >= 100, seen


# --- bad input --------------------------------------------------------------------------

GOOD_PRED = "S1,lcc,0,0,10,10,5,0,0.5\n"
GOOD_BOX = "S1,lcc,0,0,10,10,5,20\n"


@pytest.mark.parametrize(
    ("which", "text", "row", "column", "words"),
    [
        ("preds", "StudyUID,View,X,Y,Width,Height,Z,Depth\n" + GOOD_PRED[:-5] + "\n", None, None,
         ["missing column", "'Score'"]),
        ("preds", PRED_HEADER + GOOD_PRED + "S1,LCC,0,0,10,10,5,0,0.5\n", 2, "View",
         ["unknown view", "'LCC'"]),
        ("boxes", BOX_HEADER + "S1,lxx,0,0,10,10,5,20\n", 1, "View", ["unknown view", "'lxx'"]),
        ("boxes", BOX_HEADER + GOOD_BOX + "S1,lcc,0,0,-10,10,5,20\n", 2, "Width", ["negative"]),
        ("preds", PRED_HEADER + "S1,lcc,0,0,10,-1,5,0,0.5\n", 1, "Height", ["negative"]),
        ("preds", PRED_HEADER + GOOD_PRED * 2 + "S1,lcc,0,0,10,10,5,0,nan\n", 3, "Score",
         ["not a finite number"]),
        ("preds", PRED_HEADER + "S1,lcc,0,0,10,10,5,0,high\n", 1, "Score",
         ["'high' is not a number"]),
        ("preds", PRED_HEADER + "S1,lcc,0,0,10,10,5,0,\n", 1, "Score", ["missing value"]),
        ("preds", PRED_HEADER + ",lcc,0,0,10,10,5,0,0.5\n", 1, "StudyUID", ["missing value"]),
        ("boxes", BOX_HEADER + "S1,lcc,1x,0,10,10,5,20\n", 1, "X", ["'1x' is not a number"]),
        ("preds", PRED_HEADER, None, None, ["no data rows"]),
        ("boxes", BOX_HEADER, None, None, ["no data rows"]),
        ("labels", "StudyUID,View\n", None, None, ["no data rows"]),
        ("labels", "StudyUID,View\nS2,lcc\n", None, None, ["0 positive volumes"]),
        ("preds", "", None, None, ["empty"]),
        ("preds", PRED_HEADER + "S1,lcc,0,0,10,10,5,0,0.5,7,8\n", None, None, ["cannot parse CSV"]),
    ],
)
def test_bad_csv(
    tmp_path: Path, which: str, text: str, row: int | None, column: str | None, words: list[str]
) -> None:
    files = {"labels": "StudyUID,View\nS1,lcc\n", "boxes": BOX_HEADER + GOOD_BOX}
    files["preds"] = PRED_HEADER + GOOD_PRED
    files[which] = text
    paths = {name: write(tmp_path, f"{name}.csv", body) for name, body in files.items()}
    with pytest.raises(FrocInputError) as caught:
        evaluate(paths["labels"], paths["boxes"], paths["preds"])
    message, error = str(caught.value), caught.value
    assert f"{which}.csv" in message and error.source.endswith(f"{which}.csv")
    assert (error.row, error.column) == (row, column)
    if row is not None:
        assert f"data row {row} (1-based" in message
    if column is not None:
        assert repr(column) in message
    for word in words:
        assert word in message


def test_bad_dataframes_report_0_based_positions(tmp_path: Path) -> None:
    labels = pl.DataFrame({"StudyUID": ["S1"], "View": ["lcc"]})
    boxes = pl.read_csv((BOX_HEADER + GOOD_BOX).encode())
    preds = pl.DataFrame(
        {"StudyUID": ["S1"] * 3, "View": ["lcc"] * 3, "X": [0] * 3, "Y": [0] * 3, "Width": [9] * 3,
         "Height": [9] * 3, "Z": [5] * 3, "Depth": [0] * 3, "Score": [0.5, 0.4, float("nan")]}
    )
    expected = (
        r"predictions <dataframe>, row 2 \(0-based position\), column 'Score': "
        r"nan is not a finite number"
    )
    with pytest.raises(FrocInputError, match=expected):
        evaluate(labels, boxes, preds)
    with pytest.raises(FrocInputError, match=r"row 2 \(0-based position\), column 'Score'"):
        evaluate(labels, boxes, preds.to_pandas())
    with pytest.raises(FrocInputError, match="unsupported column type"):
        evaluate(labels, boxes, preds.with_columns(pl.lit([1]).alias("Z")))
    with pytest.raises(FrocInputError, match="file not found"):
        evaluate(tmp_path / "nope.csv", boxes, preds)
    with pytest.raises(FrocInputError, match="expected a CSV path or a DataFrame"):
        evaluate(labels, boxes, 42)


# --- plot and CLI -----------------------------------------------------------------------


@pytest.fixture
def froc_cli(monkeypatch: pytest.MonkeyPatch):
    """``tomosight`` with only this command registered, so sibling commands cannot interfere."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("froc",))
    return cli.main


def test_plot_writes_png_atomically(golden: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = plot_froc(evaluate(*golden), tmp_path / "froc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["boxes.csv", "froc.png", "labels.csv", "preds.csv"]  # no temp file left


def test_cli_table(froc_cli, golden, capsys) -> None:
    assert froc_cli(["froc", *map(str, golden)]) == 0
    out = capsys.readouterr().out
    assert "0.8750" in out and "0.9333" in out
    assert "16 predictions, 4 true positives, 3 GT boxes, 4 volumes (2 positive)" in out


def test_cli_json_and_plot(froc_cli, golden, tmp_path: Path, capsys) -> None:
    png = tmp_path / "curve.png"
    assert froc_cli(["froc", *map(str, golden), "--json", "--plot", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "mean_sensitivity": 0.875,
        "sensitivity_at_fps": {"1": 0.5, "2": 1.0, "3": 1.0, "4": 1.0},
        "sensitivity_at_2_fps_all": 0.9333333333333333,
    }
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input_exits_2(froc_cli, golden, tmp_path: Path, capsys) -> None:
    labels, boxes, _ = golden
    bad = write(tmp_path, "bad.csv", PRED_HEADER + "S1,lcc,0,0,10,10,5,0,oops\n")
    assert froc_cli(["froc", str(labels), str(boxes), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bad.csv" in captured.err and "data row 1" in captured.err and "'Score'" in captured.err
    assert froc_cli(["froc", *map(str, golden), "--plot", str(tmp_path / "no" / "x.png")]) == 2
    assert "cannot write plot" in capsys.readouterr().err
