"""Which frames of a tomosynthesis volume a slice strategy needs.

Decoding a JPEG 2000 DBT volume costs tens of CPU-seconds, so every reader asks
this module for the few frame indices it needs and decodes only those.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FrameStrategy = Literal["central", "slab", "sampled", "all"]
FRAME_STRATEGIES: tuple[str, ...] = ("central", "slab", "sampled", "all")


def frame_indices(
    n_frames: int,
    strategy: FrameStrategy = "central",
    *,
    n_slices: int = 8,
    slab: int = 5,
    center: int | None = None,
) -> list[int]:
    """Return the sorted 0-based frame indices ``strategy`` needs from ``n_frames``.

    - ``central``: the middle frame (``n_frames // 2``) or ``center`` when given;
    - ``slab``: ``slab`` consecutive frames around the centre, shifted to stay inside;
    - ``sampled``: ``n_slices`` frames, one from the middle of each of ``n_slices``
      equal bins (all frames when ``n_slices >= n_frames``);
    - ``all``: every frame.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if strategy not in FRAME_STRATEGIES:
        raise ValueError(f"unknown frame strategy {strategy!r}; expected one of {FRAME_STRATEGIES}")
    mid = n_frames // 2 if center is None else center
    if not 0 <= mid < n_frames:
        raise ValueError(f"center {mid} outside 0..{n_frames - 1}")
    if strategy == "central":
        return [mid]
    if strategy == "all":
        return list(range(n_frames))
    if strategy == "slab":
        if slab < 1:
            raise ValueError(f"slab must be >= 1, got {slab}")
        width = min(slab, n_frames)
        start = min(max(mid - width // 2, 0), n_frames - width)
        return list(range(start, start + width))
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    if n_slices >= n_frames:
        return list(range(n_frames))
    bins = (np.arange(n_slices) + 0.5) * n_frames / n_slices
    return [int(i) for i in np.floor(bins)]
