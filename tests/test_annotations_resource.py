"""resources.annotations: Duke CSVs found in a dataset folder, or explicit CSV/Parquet contract files."""

import polars as pl

from resources.annotations import AnnotationsResource

LABELS = "PatientID,StudyUID,View,Normal,Actionable,Benign,Cancer\r\nDBT-P1,DBT-S1,lcc,0,0,0,1\r\n"


def test_duke_csvs_are_found_in_the_dataset_folder(tmp_path):
    (tmp_path / "BCS-DBT file-paths-train-v2.csv").write_text("PatientID,StudyUID,View,descriptive_path,classic_path\n")
    (tmp_path / "BCS-DBT labels-train-v2.csv").write_text(LABELS)
    resource = AnnotationsResource(dataset_dir=str(tmp_path))
    labels = resource.read("labels")
    assert labels.row(0, named=True) == {"PatientID": "DBT-P1", "StudyUID": "DBT-S1", "View": "lcc", "Normal": "0", "Actionable": "0", "Benign": "0", "Cancer": "1"}
    assert resource.read("boxes").is_empty()  # no boxes file: an empty table, not an error


def test_parquet_contract_files_are_read_as_given(tmp_path):
    path = tmp_path / "labels.parquet"
    pl.DataFrame({"PatientID": ["P"], "StudyUID": ["S"], "View": ["rcc"], "Normal": [1], "Actionable": [0], "Benign": [0], "Cancer": [0]}).write_parquet(path)
    labels = AnnotationsResource(labels_path=str(path)).read("labels")
    assert labels["Normal"].to_list() == [1] and labels.schema["Normal"] == pl.Int64
    assert AnnotationsResource().read("labels").is_empty()
