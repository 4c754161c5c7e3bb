"""Model card (Markdown) generated from an evaluation report and the run's settings."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ml.atomic import write_text_atomic
from ml.evaluation.report import EvaluationReport, GroupResult, MetricEstimate, NotEvaluable

DEFAULT_INTENDED_USE = (
    "Research and engineering demonstration: ranking Digital Breast Tomosynthesis exams by "
    "estimated probability of malignancy. Not a medical device."
)
DEFAULT_CAVEATS = (
    "Trained and evaluated on synthetic data; these figures say nothing about real patients.",
    "Duke BCS-DBT quirk: benign and cancer studies list only the lesion breast's views while "
    "normal and actionable studies list all four, so the number of views leaks the label. "
    "Scores should be a maximum over the breasts present (CC+MLO fused per breast); "
    "left/right attention fusion can exploit the view count.",
    "Not for clinical use without prospective validation on the target site's scanners "
    "and population.",
)
PACKAGES = ("tomosight", "torch", "timm", "numpy")
METRIC_LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "brier": "Brier score",
    "ece": "ECE",
    "log_loss": "Log-loss",
}


def _label(name: str) -> str:
    if name.startswith("sens_at_spec_"):
        return f"Sensitivity at specificity {name.removeprefix('sens_at_spec_')}"
    return METRIC_LABELS.get(name, name)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_estimate(m: MetricEstimate) -> str:
    """``0.912 (0.871-0.948)``, or the bare value when there is no interval."""
    if m.value is None:
        return "n/a"
    if m.lower is None or m.upper is None:
        return _fmt(m.value)
    return f"{m.value:.3f} ({m.lower:.3f}-{m.upper:.3f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _group_row(name: str, group: GroupResult | NotEvaluable, metric_names: list[str]) -> list[str]:
    counts = [str(group.n_exams), str(group.n_patients), str(group.n_positive)]
    if isinstance(group, NotEvaluable):
        blanks = ["-"] * (len(metric_names) - 1)
        return [name, *counts, f"not evaluable: {group.reason}", *blanks]
    return [name, *counts, *(format_estimate(group.metrics[m]) for m in metric_names)]


def _metric_tables(report: EvaluationReport, overall_name: str) -> list[str]:
    """The overall row, then one table per subgroup column."""
    names = list(report.overall.metrics)
    unit = report.unit.capitalize()
    header = ["Group", f"{unit}s", "Patients", "Malignant", *(_label(n) for n in names)]
    lines = _table(header, [_group_row(overall_name, report.overall, names)])
    for column, levels in report.subgroups.items():
        lines += ["", f"### By {column}", ""]
        lines += _table(header, [_group_row(str(k), g, names) for k, g in levels.items()])
    if report.subgroups:
        minimum = f"{report.min_group_size} {report.unit}s"
        lines += ["", f"Subgroups with fewer than {minimum}, or with one class only, are not evaluated."]
    return lines


def _key_values(mapping: Mapping[str, Any]) -> list[str]:
    if not mapping:
        return ["(none recorded)"]
    return [
        f"- **{key}**: {json.dumps(value) if isinstance(value, dict | list) else _fmt(value, 4)}"
            for key, value in mapping.items()]


def _operating_point_rows(points: Mapping[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for name, point in points.items():
        if not isinstance(point, Mapping) or name == "bands":
            continue
        label = f"{prefix}{name}"
        if "threshold" in point:
            metrics = (point["threshold"], point.get("sensitivity"), point.get("specificity"))
            rows.append([label, *(_fmt(v, 4) for v in metrics)])
        else:
            rows += _operating_point_rows(point, f"{label}.")
    return rows


def _band_rows(points: Mapping[str, Any]) -> list[list[str]]:
    bands = points.get("triage", {}).get("bands", {})
    return [
        [name, str(b["exams"]), _fmt(b["fraction"]), str(b["cancers"]), _fmt(b["cancer_fraction"])]
            for name, b in bands.items()]


def _versions(version: str, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    found: dict[str, Any] = {"model version": version}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found.update(extra or {})
    return found


def model_card(
    report: EvaluationReport,
    *,
    model_name: str,
    version: str,
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    calibration: Mapping[str, Any],
    operating_points: Mapping[str, Any],
    intended_use: str | None = None,
    caveats: list[str] | None = None,
    versions: Mapping[str, Any] | None = None,
    view_report: EvaluationReport | None = None,
) -> str:
    """Render the model card; ``caveats`` are added to the default ones, never replace them.

    ``view_report`` (per-view scores against per-breast truth) adds a view-level section.
    """
    level = f"{report.confidence:.0%}"
    lines = [f"# Model card: {model_name} {version}", "", "## Intended use", "",
             intended_use or DEFAULT_INTENDED_USE, "", "## Data", "", *_key_values(data), "",
             "## Configuration", "", *_key_values(config), "", "## Metrics", "",
             f"Point estimates with {level} confidence intervals from {report.n_boot} "
             "patient-level "
             f"bootstrap resamples (seed {report.seed}, percentile intervals; resamples holding "
             "one class "
             f"are skipped: {report.overall.n_boot_skipped} overall). ECE uses {report.ece_bins} "
             "equal-width bins.", ""]
    lines += _metric_tables(report, "all")
    if view_report is not None:
        note = "Each view's own score against its breast's truth (same bootstrap settings)."
        lines += ["", "## Metrics per view", "", note, ""]
        lines += _metric_tables(view_report, "all views")
    lines += ["", "## Calibration", "", *_key_values(calibration), "", "## Operating points", "",
              "Thresholds were chosen on validation scores; an exam is positive when its score "
              "is at or "
              "above the threshold.", ""]
    lines += _table(["Operating point", "Threshold", "Sensitivity", "Specificity"],
                    _operating_point_rows(operating_points))
    if bands := _band_rows(operating_points):
        lines += ["", "Triage bands on the validation scores:", ""]
        header = ["Band", "Exams", "Share of exams", "Malignant", "Share of malignant"]
        lines += _table(header, bands)
    lines += ["", "## Caveats", "", *(f"- {c}" for c in (*DEFAULT_CAVEATS, *(caveats or []))), "",
              "## Versions", "", *_key_values(_versions(version, versions)), ""]
    return "\n".join(lines)


def write_model_card(path: str | os.PathLike[str], text: str) -> Path:
    """Write a rendered model card atomically."""
    return write_text_atomic(path, text)
