"""Plan a cohort (patients, studies, views, lesions, quirks) before any pixel is rendered.

Planning is cheap and sequential, so the whole cohort depends only on ``config.seed``;
pixel rendering then uses one generator per volume, seeded from ``VolumePlan.seed``, so the
result does not depend on how many worker processes render it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from ml.synth.bto import derived_uid
from ml.synth.config import CohortConfig
from ml.synth.volume import LesionSpec

CLASSES = ("normal", "actionable", "benign", "cancer")
VIEWS = ("lcc", "lmlo", "rcc", "rmlo")
DESCRIPTIONS = (
    "MAMMO SCREENING BILATERAL DBT",
    "BREAST TOMOSYNTHESIS BILAT",
    "DIGITAL BREAST TOMO",
    "MAMMO TOMO BILATERAL",
)  # drawn independently of the class, so the path does not leak the label
INSTITUTIONS = ("SYNTHETIC BREAST CENTER", "SYNTH GENERAL HOSPITAL", "SYNTH IMAGING CLINIC")
# class -> ((lesion kind, probability, radius range as a fraction of rows), ...); benign
# calcifications scatter over a wider area than the tight malignant clusters
LESION_MIX: dict[str, tuple[tuple[str, float, tuple[float, float]], ...]] = {
    "benign": (("mass_benign", 0.75, (0.035, 0.065)), ("calc_benign", 0.25, (0.05, 0.08))),
    "cancer": (
        ("mass_spiculated", 0.55, (0.035, 0.065)),
        ("distortion", 0.25, (0.035, 0.06)),
        ("calc_malignant", 0.20, (0.02, 0.035)),
    ),
    "actionable": (("asymmetry", 1.0, (0.07, 0.1)),),
}


@dataclass(frozen=True)
class DeviceQuirks:
    """Per-study vendor conventions of the acquiring device."""

    photometric: str = "MONOCHROME2"
    window: bool = True
    frame_laterality: bool = True
    vendor_extras: bool = False
    windows_per_frame: bool = False


@dataclass(frozen=True)
class VolumePlan:
    """One view (one multi-frame file) of a study."""

    view: str  # Duke view name, e.g. "lcc"
    series_instance_uid: str
    series_number: int
    frames: int
    slice_mm: float
    density: float
    lesions: tuple[LesionSpec, ...]
    flipped: bool  # stored rotated 180 degrees in-plane
    na_folder: bool  # on-disk series folder carries "-NA-" (newer NBIA downloads)
    seed: tuple[int, ...]


@dataclass(frozen=True)
class StudyPlan:
    """One study of one patient, with its views and (synthetic) PHI."""

    index: int
    patient_id: str
    study_id: str
    study_instance_uid: str
    study_date: dt.date
    description: str
    label: str
    subject: int
    quirks: DeviceQuirks
    patient_name: str
    birth_date: dt.date
    institution: str
    accession: str
    device_serial: str
    volumes: tuple[VolumePlan, ...]


def class_counts(config: CohortConfig) -> dict[str, int]:
    """Studies per class, by largest remainder, so the counts sum to ``config.studies``."""
    fractions = {
        "normal": config.normal_fraction,
        "actionable": config.actionable_fraction,
        "benign": config.benign_fraction,
        "cancer": config.cancer_fraction,
    }
    total = sum(fractions.values())
    exact = {k: config.studies * v / total for k, v in fractions.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(CLASSES, key=lambda k: (-(exact[k] - counts[k]), CLASSES.index(k)))
    for k in order[: config.studies - sum(counts.values())]:
        counts[k] += 1
    return counts


def _lesions(label: str, count: int, rng: np.random.Generator) -> tuple[LesionSpec, ...]:
    mix = LESION_MIX[label]
    out = []
    for _ in range(count):
        kind, _, (lo, hi) = mix[int(rng.choice(len(mix), p=[p for _, p, _ in mix]))]
        out.append(
            LesionSpec(
                kind,
                float(rng.uniform(lo, hi)),
                float(rng.uniform(0.25, 0.75)),
                int(rng.integers(2**31)),
            )
        )
    return tuple(out)


def _breast_lesions(
    label: str, config: CohortConfig, rng: np.random.Generator
) -> dict[str, tuple[LesionSpec, ...]]:
    """Lesions per breast side ("L"/"R"); a side is absent when it has none."""
    if label == "normal":
        return {}
    if label == "actionable":
        return {str(rng.choice(["L", "R"])): _lesions(label, 1, rng)}
    sides = (
        ["L", "R"] if rng.random() < config.bilateral_fraction else [str(rng.choice(["L", "R"]))]
    )
    return {
        s: _lesions(label, 2 if rng.random() < config.second_lesion_fraction else 1, rng)
        for s in sides
    }


def _listed_views(
    label: str,
    lesions: dict[str, tuple[LesionSpec, ...]],
    config: CohortConfig,
    rng: np.random.Generator,
) -> list[str]:
    """Normal/actionable: all four views; benign/cancer: only views of the lesion breast(s)."""
    if label in ("normal", "actionable"):
        return list(VIEWS)
    views = []
    for side in sorted(lesions):
        pair = [f"{side.lower()}cc", f"{side.lower()}mlo"]
        views += [str(rng.choice(pair))] if rng.random() < config.single_view_fraction else pair
    return views


def _quirks(config: CohortConfig, rng: np.random.Generator) -> DeviceQuirks:
    draws = rng.random(5)
    return DeviceQuirks(
        photometric="MONOCHROME1" if draws[0] < config.monochrome1_fraction else "MONOCHROME2",
        window=not draws[1] < config.no_window_fraction,
        frame_laterality=not draws[2] < config.no_frame_laterality_fraction,
        vendor_extras=bool(draws[3] < config.vendor_extras_fraction),
        windows_per_frame=bool(draws[4] < config.per_frame_window_fraction),
    )


def _patients(config: CohortConfig, rng: np.random.Generator) -> list[int]:
    """Patient number (1-based) of each study; some patients get a second study."""
    owners: list[int] = []
    patient = 0
    while len(owners) < config.studies:
        patient += 1
        repeat = len(owners) + 1 < config.studies and rng.random() < config.repeat_patient_fraction
        owners += [patient] * (2 if repeat else 1)
    return owners


def plan_cohort(config: CohortConfig) -> list[StudyPlan]:
    """Deterministically plan every study of the cohort from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    counts = class_counts(config)
    labels = [str(x) for x in rng.permutation([c for c in CLASSES for _ in range(counts[c])])]
    owners = _patients(config, rng)
    offsets = rng.integers(0, config.days, config.studies)
    for patient in set(owners):  # a patient's studies are in date order
        idx = [i for i, o in enumerate(owners) if o == patient]
        offsets[idx] = np.sort(offsets[idx])
    patient_density = {
        p: float(np.clip(rng.normal(config.density, 0.08), 0.05, 0.9)) for p in sorted(set(owners))
    }
    birth = {
        p: config.start_date - dt.timedelta(days=int(rng.integers(40 * 365, 76 * 365)))
        for p in sorted(set(owners))
    }

    studies = []
    for i, (label, patient) in enumerate(zip(labels, owners, strict=True)):
        study_id = f"DBT-S{i + 1:05d}"
        lesions = _breast_lesions(label, config, rng)
        views = _listed_views(label, lesions, config, rng)
        thickness = {s: float(rng.uniform(40.0, 70.0)) for s in "LR"}
        base_frames = {s: int(rng.integers(config.slices, config.slices_max + 1)) for s in "LR"}
        volumes = []
        for view in views:
            side = view[0].upper()
            frames = min(
                base_frames[side] + (int(rng.integers(0, 3)) if view.endswith("mlo") else 0),
                config.slices_max,
            )
            volumes.append(
                VolumePlan(
                    view=view,
                    series_instance_uid=derived_uid("tomosight-synth", config.seed, study_id, view),
                    series_number=int(rng.integers(1000, 99999)),
                    frames=frames,
                    slice_mm=thickness[side] / frames,
                    density=float(
                        np.clip(patient_density[patient] + rng.normal(0, 0.03), 0.05, 0.9)
                    ),
                    lesions=lesions.get(side, ()),
                    flipped=bool(rng.random() < config.flipped_fraction),
                    na_folder=bool(rng.random() < config.na_folder_fraction),
                    seed=(config.seed, i, VIEWS.index(view)),
                )
            )
        studies.append(
            StudyPlan(
                index=i,
                patient_id=f"DBT-P{patient:05d}",
                study_id=study_id,
                study_instance_uid=derived_uid("tomosight-synth", config.seed, study_id),
                study_date=config.start_date + dt.timedelta(days=int(offsets[i])),
                description=str(rng.choice(DESCRIPTIONS)),
                label=label,
                subject=int(rng.choice([0, 2])),
                quirks=_quirks(config, rng),
                patient_name=f"SYNTH^PATIENT{patient:05d}",
                birth_date=birth[patient],
                institution=str(rng.choice(INSTITUTIONS)),
                accession=f"SYNACC{i + 1:07d}",
                device_serial=f"SN-{int(rng.integers(10**5, 10**6))}",
                volumes=tuple(volumes),
            )
        )
    return studies
