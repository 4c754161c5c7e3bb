"""``exam_labels`` and ``boxes``: annotations keyed like the ingested volumes, per study date.

The annotation tables name studies by their original keys; they are pseudonymised
with the same key as the DICOM, then joined to the partition's ``filepaths``.  Boxes
that do not fit their volume are rejected with a reason in the metadata.
"""

import dagster as dg
import polars as pl

from dbt_assets.audit import audit_metadata
from dbt_assets.checks import contract_check, failures_markdown
from dbt_assets.partitions import study_date
from resources.annotations import AnnotationsResource
from resources.pseudonymizer import Pseudonymizer
from schemas import Boxes, ExamLabels

KEYS = ["PatientID", "StudyUID", "View"]
LABEL_FLAGS = ["Normal", "Actionable", "Benign", "Cancer"]
BOX_INTS = ["Subject", "Slice", "X", "Y", "Width", "Height", "AD", "VolumeSlices"]


def pseudonymise_keys(table: pl.DataFrame, pseudonymizer: Pseudonymizer) -> pl.DataFrame:
    """Replace original PatientID/StudyUID with the keyed pseudonyms the ingestion used."""
    if table.is_empty():
        return table
    return table.with_columns(
        pl.col("PatientID").map_elements(pseudonymizer.patient, return_dtype=pl.String),
        pl.col("StudyUID").map_elements(pseudonymizer.study, return_dtype=pl.String),
    )


def empty_labels() -> pl.DataFrame:
    return pl.DataFrame(schema={**{k: pl.String for k in KEYS}, **{f: pl.Int64 for f in LABEL_FLAGS}})


def empty_boxes() -> pl.DataFrame:
    schema = {**{k: pl.String for k in KEYS}, **{c: pl.Int64 for c in BOX_INTS}, "Class": pl.String}
    return pl.DataFrame(schema=schema).select(*KEYS, "Subject", "Slice", "X", "Y", "Width", "Height", "Class", "AD", "VolumeSlices")


@dg.asset(partitions_def=study_date, group_name="annotations", description=__doc__)
def exam_labels(
    context: dg.AssetExecutionContext,
    filepaths: pl.DataFrame,
    annotations: AnnotationsResource,
    pseudonymizer: Pseudonymizer,
) -> pl.DataFrame:
    labels = pseudonymise_keys(annotations.read("labels"), pseudonymizer)
    if labels.is_empty() or filepaths.is_empty():
        result = empty_labels()
    else:
        labels = labels.with_columns(pl.col(LABEL_FLAGS).cast(pl.Int64, strict=False))
        result = labels.join(filepaths.select(KEYS), on=KEYS, how="inner").select(*KEYS, *LABEL_FLAGS).sort(KEYS)
    unlabelled = 0 if filepaths.is_empty() else filepaths.join(result, on=KEYS, how="anti").height
    context.add_output_metadata(
        {**audit_metadata(context, ExamLabels), "volumes_without_labels": unlabelled}
    )
    return result


def box_problems(boxes: pl.DataFrame) -> pl.Expr:
    """Why a joined box does not fit its volume (null when it fits)."""
    return (
        pl.when(pl.col("Width") <= 0).then(pl.lit("non-positive width"))
        .when(pl.col("Height") <= 0).then(pl.lit("non-positive height"))
        .when((pl.col("X") < 0) | (pl.col("Y") < 0)).then(pl.lit("starts outside the image"))
        .when(pl.col("X") + pl.col("Width") > pl.col("columns")).then(pl.lit("extends past the right edge"))
        .when(pl.col("Y") + pl.col("Height") > pl.col("rows")).then(pl.lit("extends past the bottom edge"))
        .when((pl.col("Slice") < 0) | (pl.col("Slice") >= pl.col("frames"))).then(pl.lit("slice outside the volume"))
        .when(pl.col("VolumeSlices") != pl.col("frames")).then(pl.lit("VolumeSlices differs from the frame count"))
        .otherwise(None)
    )  # fmt: skip


@dg.asset(partitions_def=study_date, group_name="annotations", description=__doc__)
def boxes(
    context: dg.AssetExecutionContext,
    filepaths: pl.DataFrame,
    annotations: AnnotationsResource,
    pseudonymizer: Pseudonymizer,
) -> pl.DataFrame:
    table = pseudonymise_keys(annotations.read("boxes"), pseudonymizer)
    if table.is_empty() or filepaths.is_empty():
        result, rejected = empty_boxes(), pl.DataFrame()
    else:
        table = table.with_columns(pl.col(BOX_INTS).cast(pl.Int64, strict=False))
        joined = table.join(filepaths.select(*KEYS, "rows", "columns", "frames"), on=KEYS, how="inner")
        joined = joined.with_columns(box_problems(joined).alias("reason"))
        rejected = joined.filter(pl.col("reason").is_not_null()).select(*KEYS, "X", "Y", "Width", "Height", "Slice", "reason")
        result = joined.filter(pl.col("reason").is_null()).select(empty_boxes().columns).sort([*KEYS, "Slice"])
    if not rejected.is_empty():
        context.log.warning(f"{len(rejected)} box(es) rejected: they do not fit their volume")
    context.add_output_metadata(
        {
            **audit_metadata(context, Boxes),
            "rejected_boxes": len(rejected),
            "rejected": dg.MetadataValue.md(failures_markdown(rejected)),
        }
    )
    return result


@dg.asset(group_name="annotations", description="Label and box rows that name no ingested volume, with the reason.")
def unmatched_annotations(
    context: dg.AssetExecutionContext,
    filepaths: pl.DataFrame,
    annotations: AnnotationsResource,
    pseudonymizer: Pseudonymizer,
) -> pl.DataFrame:
    known = filepaths.select(KEYS) if not filepaths.is_empty() else pl.DataFrame(schema={k: pl.String for k in KEYS})
    studies = known.select("StudyUID").unique()
    frames = []
    for kind in ("labels", "boxes"):
        table = pseudonymise_keys(annotations.read(kind), pseudonymizer)
        if table.is_empty():
            continue
        missing = table.select(KEYS).join(known, on=KEYS, how="anti")
        reason = pl.when(pl.col("StudyUID").is_in(studies["StudyUID"].implode())).then(pl.lit("unknown_view"))
        frames.append(missing.with_columns(table=pl.lit(kind), reason=reason.otherwise(pl.lit("unknown_study"))))
    schema = {**{k: pl.String for k in KEYS}, "table": pl.String, "reason": pl.String}
    result = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    if len(result):
        context.log.warning(f"{len(result)} annotation row(s) name no ingested volume")
    counts = dict(result.group_by("reason").len().rows()) if len(result) else {}
    context.add_output_metadata({**audit_metadata(context), "reasons": dg.MetadataValue.json(counts)})
    return result.sort("table", *KEYS)


exam_labels_contract = contract_check(exam_labels, ExamLabels, study_date)
boxes_contract = contract_check(boxes, Boxes, study_date)
