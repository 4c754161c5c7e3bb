"""Seeded augmentations of one view (S, H, W), applied identically to all its slices.

Each transform owns a ``numpy.random.Generator``; :meth:`reseed` re-creates it from a key so
the dataset can make every item's draw depend only on (seed, epoch, index, view slot).
No horizontal flip by default: it would move the chest wall to the other side of the image,
which never happens in the Duke frame. ``horizontal_flip`` exists as an option; it flips the
pixels only and swaps no laterality or view slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Key = int | tuple[int, ...]


class RandomTransform:
    """A transform with its own seeded generator."""

    def __init__(self, seed: Key = 0) -> None:
        self.reseed(seed)

    def reseed(self, key: Key) -> None:
        """Re-create the generator from ``key`` (an int or a tuple of ints)."""
        self.rng = np.random.default_rng(key)

    def __call__(self, view: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class RandomFlip(RandomTransform):
    """With probability ``p``, flip rows (``axis=-2``: vertical, default) or columns (``-1``)."""

    def __init__(self, p: float = 0.5, axis: int = -2, seed: Key = 0) -> None:
        super().__init__(seed)
        self.p, self.axis = p, axis

    def __call__(self, view: np.ndarray) -> np.ndarray:
        if self.rng.random() < self.p:
            return np.ascontiguousarray(np.flip(view, axis=self.axis))
        return view


class RandomIntensity(RandomTransform):
    """Gamma, contrast (about the mean) and brightness shifts, clipped to [0, 1]."""

    def __init__(
        self,
        gamma: float = 0.1,
        contrast: float = 0.1,
        brightness: float = 0.05,
        seed: Key = 0,
    ) -> None:
        super().__init__(seed)
        self.gamma, self.contrast, self.brightness = gamma, contrast, brightness

    def __call__(self, view: np.ndarray) -> np.ndarray:
        gamma = math.exp(self.rng.uniform(-self.gamma, self.gamma))
        contrast = 1.0 + self.rng.uniform(-self.contrast, self.contrast)
        shift = self.rng.uniform(-self.brightness, self.brightness)
        out = np.power(np.clip(view, 0.0, 1.0), gamma)
        out = (out - out.mean()) * contrast + out.mean() + shift
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


class RandomAffine(RandomTransform):
    """Small rotation (degrees), isotropic scale and translation (fraction of size), zero fill."""

    def __init__(
        self,
        degrees: float = 5.0,
        scale: float = 0.05,
        translate: float = 0.03,
        seed: Key = 0,
    ) -> None:
        super().__init__(seed)
        self.degrees, self.scale, self.translate = degrees, scale, translate

    def matrix(self, height: int, width: int) -> torch.Tensor:
        """Draw one (2, 3) ``affine_grid`` matrix in normalised coordinates (output -> input)."""
        angle = math.radians(self.rng.uniform(-self.degrees, self.degrees))
        zoom = 1.0 + self.rng.uniform(-self.scale, self.scale)
        ty, tx = self.rng.uniform(-self.translate, self.translate, size=2) * 2.0
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        # Rotate in pixel units so non-square images are not sheared.
        ratio = height / width
        return torch.tensor(
            [[cos, -sin * ratio, tx], [sin / ratio, cos, ty]], dtype=torch.float32
        )

    def __call__(self, view: np.ndarray) -> np.ndarray:
        height, width = view.shape[-2:]
        theta = self.matrix(height, width)[None]
        image = torch.from_numpy(np.ascontiguousarray(view, dtype=np.float32))[None]
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out[0].numpy()


class Compose:
    """Apply transforms in order; ``__call__(view, key)`` reseeds each from ``(*key, i)`` first."""

    def __init__(self, transforms: Sequence[RandomTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, view: np.ndarray, key: Key | None = None) -> np.ndarray:
        base = () if key is None else (key,) if isinstance(key, int) else tuple(key)
        for position, transform in enumerate(self.transforms):
            if key is not None:
                transform.reseed((*base, position))
            view = transform(view)
        return view


def default_augment(horizontal_flip: bool = False) -> Compose:
    """Vertical flip, intensity and small affine (and a horizontal flip only when asked)."""
    transforms: list[RandomTransform] = [RandomFlip(axis=-2)]
    if horizontal_flip:
        transforms.append(RandomFlip(axis=-1))
    transforms += [RandomIntensity(), RandomAffine()]
    return Compose(transforms)
