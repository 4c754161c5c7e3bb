"""ml.models: registry, config validation, pooling x fusion combinations, masking, weights."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from ml.models import (
    DBTClassifier,
    ModelConfig,
    ModelConfigError,
    WeightsError,
    create_model,
    list_models,
    load_local_weights,
    register_model,
)
from ml.models.config import BREAST_FUSIONS, EXAM_FUSIONS, SLICE_POOLINGS

torch.set_num_threads(1)
SIZE = 32


def _exam(batch: int, slices: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 4, slices, SIZE, SIZE, generator=gen)
    mask = torch.ones(batch, 4, dtype=torch.bool)
    mask[0, 2:] = False  # first exam: left breast only (Duke benign/cancer shape)
    if batch > 1:
        mask[1, 3] = False  # second exam: rmlo missing
    x[~mask] = 0.0
    return x, mask


def _tiny(**overrides: object) -> DBTClassifier:
    torch.manual_seed(0)
    return create_model("dbt_tiny", input_size=(SIZE, SIZE), **overrides)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs(name: str) -> None:
    import timm

    base = create_model(name).config
    overrides = {"n_slices": 2} if base.slice_strategy == "sampled" else {}
    model = create_model(name, input_size=(SIZE, SIZE), **overrides).eval()
    x, mask = _exam(1, model.config.n_slices)
    with torch.no_grad():
        out = model(x, mask)
    classes = model.config.num_classes
    assert out["view"].shape == (1, 4, classes)
    assert out["breast"].shape == (1, 2, classes)
    assert out["exam"].shape == (1, classes)
    assert out["slice_weights"].shape == (1, 4, model.config.n_slices)
    assert torch.isfinite(out["exam"]).all()
    backbone = timm.create_model(model.config.backbone, pretrained=False, in_chans=1, num_classes=0)
    n_backbone = sum(p.numel() for p in backbone.parameters())
    n_total = sum(p.numel() for p in model.parameters())
    heads = (model.neck, model.slice_pool, model.head)
    n_heads = sum(p.numel() for m in heads for p in m.parameters())
    assert sum(p.numel() for p in model.backbone.parameters()) == n_backbone
    assert n_total == n_backbone + n_heads
    assert 0 < n_heads < 0.2 * n_total
    assert model.num_features == backbone.num_features


COMBOS = list(itertools.product(SLICE_POOLINGS, BREAST_FUSIONS, EXAM_FUSIONS, (1, 4)))


@pytest.mark.parametrize(("pooling", "fusion", "exam_fusion", "classes"), COMBOS)
def test_combination_shapes_and_masked_views_do_not_matter(
    pooling: str, fusion: str, exam_fusion: str, classes: int
) -> None:
    slices = 1 if pooling == "none" else 3
    strategy = "central" if slices == 1 else "sampled"
    model = _tiny(
        slice_pooling=pooling, fusion=fusion, exam_fusion=exam_fusion, num_classes=classes,
        n_slices=slices, slice_strategy=strategy, embed_dim=16,
    )
    x, mask = _exam(2, slices)
    model.train()  # BatchNorm batch statistics must not see masked views either
    out = model(x, mask)
    assert out["view"].shape == (2, 4, classes)
    assert out["breast"].shape == (2, 2, classes)
    assert out["exam"].shape == (2, classes)
    noisy = x.clone()
    noisy[~mask] = torch.rand_like(noisy[~mask]) * 5.0
    again = model(noisy, mask)
    for key in ("view", "breast", "exam", "slice_weights"):
        torch.testing.assert_close(again[key], out[key], rtol=0, atol=0)
    assert not out["breast"][0, 1].any()  # the empty right breast of exam 0
    assert not out["view"][~mask].any()
    weights = out["slice_weights"]
    torch.testing.assert_close(weights[mask].sum(-1), torch.ones(int(mask.sum())))
    assert not weights[~mask].any()
    out["exam"].sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_max_fusion_is_max_over_present_views() -> None:
    model = _tiny(fusion="max", exam_fusion="max").eval()
    x, mask = _exam(2, 1)
    with torch.no_grad():
        out = model(x, mask)
    view = out["view"][..., 0].masked_fill(~mask, float("-inf"))
    with torch.no_grad():
        model.head.exam_offset.fill_(-0.7)  # the learned exam-level offset shifts every exam alike
        shifted = model(x, mask)
    torch.testing.assert_close(out["exam"][:, 0], view.amax(1))
    torch.testing.assert_close(shifted["exam"][:, 0], view.amax(1) - 0.7)
    torch.testing.assert_close(shifted["breast"], out["breast"])
    torch.testing.assert_close(out["breast"][1, 0, 0], view[1, :2].amax())
    torch.testing.assert_close(out["breast"][1, 1, 0], view[1, 2])


def test_feature_head_split_matches_forward() -> None:
    model = _tiny(slice_pooling="attention", fusion="concat", n_slices=2, slice_strategy="sampled")
    model.eval()
    x, mask = _exam(2, 2)
    with torch.no_grad():
        whole = model(x, mask)
        emb = model.forward_features(x, mask)
        split = model.forward_head(emb, mask)
    assert emb.shape == (2, 4, model.embed_dim)
    assert not emb[~mask].any()
    for key in ("view", "breast", "exam"):
        torch.testing.assert_close(split[key], whole[key])


def test_adding_a_view_cannot_lower_the_max_fused_score() -> None:
    """Max fusion is blind to view count: a second breast only adds its own evidence."""
    model = _tiny().eval()
    x, _ = _exam(1, 1)
    left = torch.tensor([[True, True, False, False]])
    both = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        one, two = model(x, left), model(x, both)
    torch.testing.assert_close(one["breast"][0, 0], two["breast"][0, 0])
    assert two["exam"][0, 0] == torch.maximum(one["exam"][0, 0], two["breast"][0, 1, 0])


def test_channels_last_gives_the_same_outputs() -> None:
    model = _tiny(slice_pooling="mean", n_slices=2, slice_strategy="sampled").eval()
    x, mask = _exam(2, 2)
    with torch.no_grad():
        plain = model(x, mask)["exam"]
        model = model.to(memory_format=torch.channels_last)
        assert model.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
        fast = model(x, mask)["exam"]
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_factory_inputs() -> None:
    config = ModelConfig(
        backbone="test_resnet", slice_pooling="max", n_slices=6, slice_strategy="sampled",
        input_size=(96, 80), num_classes=4, embed_dim=24,
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(data) == config
    model = create_model(data)
    assert model.config == config and model.config.class_names[-1] == "cancer"
    assert create_model(config, dropout=0.1).config == config.replace(dropout=0.1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ModelConfig(slice_pooling="atention"), "Did you mean 'attention'"),
        (lambda: ModelConfig(fusion="concatenate"), "Did you mean 'concat'"),
        (lambda: ModelConfig(slice_strategy="sample"), "Did you mean 'sampled'"),
        (lambda: ModelConfig(num_classes=2), "num_classes"),
        (lambda: ModelConfig(n_slices=4), "n_slices must be 1"),
        (
            lambda: ModelConfig(slice_pooling="none", n_slices=4, slice_strategy="sampled"),
            "needs n_slices == 1",
        ),
        (lambda: ModelConfig(input_size=(64,)), "input_size"),
        (lambda: ModelConfig(dropout=1.5), "dropout"),
        (lambda: create_model("dbt_tiyn"), "Did you mean 'dbt_tiny'"),
        (lambda: create_model("dbt_tiny", fuson="max"), "Did you mean 'fusion'"),
        (lambda: create_model("dbt_tiny", backbone="resnet81"), "unknown timm backbone"),
        (lambda: register_model("dbt_tiny", ModelConfig()), "already registered"),
    ],
)
def test_bad_configuration_fails_early_with_a_hint(build: object, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("shape", "mask", "message"),
    [
        ((2, 3, 1, SIZE, SIZE), None, "must be"),
        ((2, 4, 1, SIZE, SIZE), torch.zeros(2, 3, dtype=torch.bool), "view_mask"),
        ((2, 4, 1, SIZE, SIZE), torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]).bool(), "at least one"),
        ((2, 4, 3, SIZE, SIZE), torch.ones(2, 4, dtype=torch.bool), "one slice per view"),
    ],
)
def test_bad_input_is_refused(
    shape: tuple[int, ...], mask: torch.Tensor | None, message: str
) -> None:
    model = _tiny().eval()
    with pytest.raises(ValueError, match=message):
        if mask is None:
            mask = torch.ones(shape[:2], dtype=torch.bool)
        model(torch.rand(shape), mask)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_three_channel_weights_load_into_one_channel_model(tmp_path, suffix: str) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    rgb = timm.create_model("test_resnet", pretrained=False, in_chans=3)
    state = {k: v.contiguous() for k, v in rgb.state_dict().items()}
    path = tmp_path / f"rgb{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    model = _tiny(pretrained=str(path))
    report = model.load_report
    assert report is not None
    assert report.adapted == ["conv1.0.weight"]
    assert set(report.unexpected) == {"fc.weight", "fc.bias"}
    assert not report.missing and not report.mismatched
    own = model.backbone.state_dict()
    torch.testing.assert_close(own["conv1.0.weight"], state["conv1.0.weight"].sum(1, keepdim=True))
    assert own["conv1.0.weight"].shape[1] == 1
    for key, value in own.items():
        if key != "conv1.0.weight":
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_full_model_weights_round_trip(tmp_path) -> None:
    from safetensors.torch import save_file

    model = _tiny(
        slice_pooling="attention", fusion="attention", n_slices=2, slice_strategy="sampled"
    )
    model.eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(123)
    fresh = create_model(model.config).eval()
    x, mask = _exam(2, 2)
    with torch.no_grad():
        before = fresh(x, mask)["exam"]
        report = load_local_weights(fresh, path)
        after = fresh(x, mask)["exam"]
        expected = model(x, mask)["exam"]
    assert not report.missing and not report.unexpected and not report.adapted
    assert not torch.equal(before, expected)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_unusable_weights_raise(tmp_path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        _tiny(pretrained=str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        _tiny(pretrained=str(junk))
    other = tmp_path / "other.pt"
    torch.save({"unrelated.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="no tensor"):
        _tiny(pretrained=str(other))


def test_seeded_construction_is_reproducible() -> None:
    x, mask = _exam(2, 1)
    outs = []
    for _ in range(2):
        model = _tiny().eval()
        with torch.no_grad():
            outs.append(model(x, mask)["exam"].numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
