"""`tomosight demo` end to end on a tiny cohort: every stage leaves its artefact."""

import json

from dbt_assets.cli import main
from schemas import BoxPredictions, FilePaths, read_parquet


def test_demo_generates_catalogues_detects_and_evaluates(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["demo", "--home", str(home), "--studies", "4", "--workers", "1"]) == 0
    filepaths, info = read_parquet(home / "tables/filepaths.parquet", FilePaths)
    assert info.schema == "FilePaths" and len(filepaths) > 0
    predictions, _ = read_parquet(home / "tables/box_predictions.parquet", BoxPredictions)
    assert set(predictions["StudyUID"]) <= set(filepaths["StudyUID"])
    report = json.loads((home / "reports/froc.json").read_text())
    assert set(report["sensitivity_at_fps"]) == {"1", "2", "3", "4"}
    assert 0.0 <= report["mean_sensitivity"] <= 1.0
    assert report["volumes"] == len(filepaths) and report["quarantined"] == 0
    for png in ("froc.png", "contact_sheet.png"):
        assert (home / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FROC (DBTex)" in capsys.readouterr().out
