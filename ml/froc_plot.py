"""Draw DBTex FROC curves to a PNG file (matplotlib, Agg canvas, atomic write)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ml.froc import FPS_TARGETS_ALL, FPS_TARGETS_POSITIVE, FrocResult


def plot_froc(result: FrocResult, path: str | os.PathLike[str]) -> Path:
    """Plot both FROC curves of ``result`` and their operating points to a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curves = (
        ("positive volumes", result.curve_positive, FPS_TARGETS_POSITIVE, "tab:blue"),
        ("all volumes", result.curve_all, FPS_TARGETS_ALL, "tab:orange"),
    )
    x_max = max(FPS_TARGETS_POSITIVE) + 0.5
    for label, curve, targets, colour in curves:
        ax.plot(curve.fps, curve.sensitivity, marker=".", color=colour, label=label)
        if curve.fps[-1] < x_max:  # numpy.interp clamps past the last point
            last = curve.sensitivity[-1]
            ax.plot([curve.fps[-1], x_max], [last, last], color=colour, ls="--", lw=0.8)
        ax.scatter(targets, curve.sensitivity_at(targets), color=colour, marker="o", zorder=3)
    for target in FPS_TARGETS_POSITIVE:
        ax.axvline(target, color="grey", linewidth=0.5, linestyle=":")
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per volume")
    ax.set_ylabel("sensitivity (found GT boxes)")
    ax.set_title(
        f"DBTex FROC: mean sensitivity {result.mean_sensitivity:.3f}, "
        f"at 2 FPs (all) {result.sensitivity_at_2_fps_all:.3f}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")

    target = Path(path)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            fig.savefig(stream, format="png")
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
