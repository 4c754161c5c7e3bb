"""A PNG contact sheet of generated views (one slice each, boxes drawn) for a human to look at."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from ml.atomic import atomic_path
from ml.synth.layout import BOXES_CSV, FILE_PATHS_CSV, LABELS_CSV
from ml.dicomio import load_view

_CLASS_ORDER = ("Cancer", "Benign", "Actionable", "Normal")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _pick(labels: list[dict[str, str]], count: int) -> list[tuple[dict[str, str], str]]:
    """Up to ``count`` volumes, cycling through the classes (cancer first), in CSV order."""
    queues = {c: [row for row in labels if row[c] == "1"] for c in _CLASS_ORDER}
    picked: list[tuple[dict[str, str], str]] = []
    while len(picked) < count and any(queues.values()):
        for cls in _CLASS_ORDER:
            if queues[cls] and len(picked) < count:
                picked.append((queues[cls].pop(0), cls.lower()))
    return picked


def write_contact_sheet(
    cohort_dir: str | Path, out_png: str | Path, count: int = 8, columns: int = 4
) -> Path:
    """Draw ``count`` views (boxed slice, or the central slice) of a cohort into ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from pydicom import dcmread

    root = Path(cohort_dir)
    paths = {
        (r["StudyUID"], r["View"]): r["descriptive_path"] for r in _read(root / FILE_PATHS_CSV)
    }
    boxes: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in _read(root / BOXES_CSV):
        boxes[(row["StudyUID"], row["View"])].append(row)
    picked = _pick(_read(root / LABELS_CSV), count)
    if not picked:
        raise ValueError(f"no volumes listed in {root / LABELS_CSV}")

    rows = -(-len(picked) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 4.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, cls) in zip(axes.ravel(), picked, strict=False):
        key = (label["StudyUID"], label["View"])
        vol_boxes = boxes.get(key, [])
        path = root / paths[key]
        frames = int(dcmread(path, stop_before_pixels=True).NumberOfFrames)
        index = int(vol_boxes[0]["Slice"]) if vol_boxes else frames // 2
        ax.imshow(load_view(path, [index], laterality=label["View"][0]).pixels[0], cmap="gray", vmin=0.0, vmax=1.0)
        for box in vol_boxes:
            on_slice = int(box["Slice"]) == index
            ax.add_patch(
                Rectangle(
                    (int(box["X"]) - 0.5, int(box["Y"]) - 0.5),
                    int(box["Width"]),
                    int(box["Height"]),
                    fill=False,
                    edgecolor="red" if on_slice else "orange",
                    linewidth=1.0,
                    linestyle="-" if on_slice else "--",
                )
            )
        ax.set_title(
            f"{label['StudyUID']} {label['View']} {cls}\nslice {index}/{frames}", fontsize=9
        )
    fig.tight_layout()
    target = Path(out_png)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return target
