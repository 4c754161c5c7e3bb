"""ml.models.gradcam: map shape/range/masking, refusal for token backbones, overlays, and
localisation of a bright blob by a model overfitted to detect it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.models import CamError, create_model, grad_cam, save_cam_overlay
from ml.models.config import ModelConfigError

torch.set_num_threads(1)
BLOB_SIZE = 96
RADIUS = BLOB_SIZE // 8


@pytest.mark.parametrize("output", ["exam", "breast", "view"])
def test_cam_shape_range_and_masked_views(output: str) -> None:
    torch.manual_seed(0)
    model = create_model("dbt_tiny_mil", input_size=(48, 40), n_slices=3, num_classes=4)
    model.train()
    x = torch.rand(4, 3, 48, 40)
    mask = torch.tensor([True, False, True, True])
    cam = grad_cam(model, x, mask, output=output, class_index=3)
    assert model.training  # mode restored
    assert cam.shape == (4, 48, 40) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0
    assert not cam[1].any()
    batched = grad_cam(
        model, x.unsqueeze(0).numpy(), mask.unsqueeze(0).numpy(), output=output, class_index=3
    )
    np.testing.assert_allclose(batched, cam, atol=1e-6)


def test_cam_refuses_bad_requests() -> None:
    model = create_model("dbt_tiny", input_size=(32, 32))
    x, mask = torch.rand(4, 1, 32, 32), torch.ones(4, dtype=torch.bool)
    with pytest.raises(CamError, match="class_index"):
        grad_cam(model, x, mask, class_index=1)
    with pytest.raises(ModelConfigError, match="Did you mean 'exam'"):
        grad_cam(model, x, mask, output="exm")
    with pytest.raises(CamError, match="one exam"):
        grad_cam(model, torch.rand(2, 4, 1, 32, 32), torch.ones(2, 4, dtype=torch.bool))


def test_token_backbone_classifies_but_cam_is_refused() -> None:
    model = create_model("dbt_tiny", backbone="test_vit", input_size=(160, 160)).eval()
    x, mask = torch.rand(1, 4, 1, 160, 160), torch.tensor([[True, True, False, False]])
    with torch.no_grad():
        assert model(x, mask)["exam"].shape == (1, 1)
    with pytest.raises(CamError, match="tokens"):
        grad_cam(model, x, mask)


def test_overlay_png(tmp_path) -> None:
    import matplotlib.image as mpimg

    image = np.full((40, 32), 0.5, dtype=np.float32)
    cam = np.zeros_like(image)
    cam[:20] = 1.0
    path = save_cam_overlay(image, cam, tmp_path / "sub" / "cam.png")
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    rgba = mpimg.imread(path)
    assert rgba.shape[:2] == (40, 32)
    hot, cold = rgba[5, 16, :3], rgba[35, 16, :3]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where the CAM is high, blue where low
    with pytest.raises(CamError, match="of one shape"):
        save_cam_overlay(image, cam[:10], tmp_path / "bad.png")


def _blob_batch(
    rng: np.random.Generator, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """Noise views; every other exam has a bright disc at a random place in its lcc view."""
    x = rng.uniform(0.0, 0.3, size=(n, 4, 1, BLOB_SIZE, BLOB_SIZE)).astype(np.float32)
    yy, xx = np.mgrid[:BLOB_SIZE, :BLOB_SIZE]
    labels = np.zeros(n, dtype=np.float32)
    centres: list[tuple[int, int] | None] = []
    for i in range(n):
        if i % 2:
            centres.append(None)
            continue
        cy, cx = (int(v) for v in rng.integers(RADIUS, BLOB_SIZE - RADIUS, 2))
        x[i, 0, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS**2] = 1.0
        labels[i] = 1.0
        centres.append((cy, cx))
    mask = np.zeros((n, 4), dtype=bool)
    mask[:, 0] = True
    return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(labels), centres


def test_cam_of_overfitted_model_peaks_on_the_blob() -> None:
    torch.manual_seed(0)
    model = create_model("dbt_tiny", input_size=(BLOB_SIZE, BLOB_SIZE))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(100):
        x, mask, labels, _ = _blob_batch(rng, 12)
        logits = model(x, mask)["exam"][:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x, mask, labels, centres = _blob_batch(np.random.default_rng(1), 8)
    model.eval()
    with torch.no_grad():
        scores = model(x, mask)["exam"][:, 0]
    assert scores[labels == 1].min() > scores[labels == 0].max()  # AUC 1.0 on held-out blobs
    yy, xx = np.mgrid[:BLOB_SIZE, :BLOB_SIZE]
    for i, centre in enumerate(centres):
        if centre is None:
            continue
        cam = grad_cam(model, x[i], mask[i])
        assert not cam[1:].any()
        cy, cx = centre
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS**2
        assert cam[0][cy, cx] >= 0.7, (centre, float(cam[0][cy, cx]))
        assert cam[0][inside].mean() > 1.5 * cam[0][~inside].mean()
