"""Architectures of lrfer.models: registry, shapes at each natural input size, structural contracts."""
from __future__ import annotations


import pytest
import torch

from lrfer.models import build_model, list_architectures
from lrfer.models.fsrfer import FSRFER
from lrfer.models.gmenet import GMENet
from lrfer.models.manet import MANet
from lrfer.models.resnet import ResNet


pytestmark = pytest.mark.usefixtures("one_thread")


#: (arch, config, natural input size) for every registered architecture, tiny widths.
CASES = [
    *[("gmenet", {"width": 8, "input_size": r}, r) for r in (8, 12, 16, 24)],
    ("gmenet", {"width": 8, "input_size": 16, "stem_stride": 2}, 16),
    *[("baseline", {"width": 8, "input_size": r}, r) for r in (8, 12, 16, 24)],
    ("resnet18", {"width": 8}, 48),
    ("manet", {"width": 8}, 48),
    ("fsrfer", {"input_size": 16, "extractor_width": 8, "hidden": 16, "growth": 8}, 16),
]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cases_cover_every_registered_architecture() -> None:
    assert sorted({arch for arch, _, _ in CASES}) == list_architectures()


@pytest.mark.parametrize("arch,config,size", CASES, ids=[f"{a}-{s}px" for a, _, s in CASES])
def test_forward_shape_and_finite(arch: str, config: dict, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_chans=1, **config).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, size, size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_num_classes_is_honoured() -> None:
    model = build_model("baseline", num_classes=3, width=8, input_size=16).eval()
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 3)


def test_unknown_architecture_names_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        build_model("vgg42")
    message = str(info.value)
    assert "vgg42" in message
    for name in list_architectures():
        assert name in message


@pytest.mark.parametrize("r", [8, 12, 16, 24])
def test_gmenet_feature_maps_at_three_scales(r: int) -> None:
    model = build_model("gmenet", width=8, input_size=r).eval()
    features, maps = model.forward_features(torch.randn(2, 1, r, r))
    assert len(maps) == 3
    assert [m.shape[-1] for m in maps] == [r, (r + 1) // 2, (r + 3) // 4]
    assert [m.shape[-2] for m in maps] == [r, (r + 1) // 2, (r + 3) // 4]
    assert [m.shape[1] for m in maps] == [8, 16, 32]
    assert features.shape == (2, model.num_features)
    attention = GMENet.attention_maps(maps)
    for a, m in zip(attention, maps):
        assert a.shape == (2, m.shape[-2] * m.shape[-1])
        torch.testing.assert_close(a.norm(dim=1), torch.ones(2))


def test_gmenet_stride_two_stem_halves_every_local_stage() -> None:
    model = build_model("gmenet", width=8, input_size=16, stem_stride=2).eval()
    features, maps = model.forward_features(torch.randn(2, 1, 16, 16))
    assert [tuple(m.shape[-2:]) for m in maps] == [(8, 8), (4, 4), (2, 2)]
    assert features.shape == (2, model.num_features)
    full = build_model("gmenet", width=8, input_size=16).eval()
    assert n_params(model) == n_params(full)  # same layers, a quarter of the positions


def test_baseline_is_gmenet_without_attention_and_global_module() -> None:
    base = build_model("baseline", width=8, input_size=16)
    full = build_model("gmenet", width=8, input_size=16)
    assert base.global_module is None
    assert full.global_module is not None
    names = {type(m).__name__ for m in base.modules()}
    assert not names & {"ChannelAttention", "SpatialAttention", "QuasiSymmetricGlobalBlock"}
    assert {"ChannelAttention", "SpatialAttention", "QuasiSymmetricGlobalBlock"} <= {type(m).__name__ for m in full.modules()}
    assert n_params(base) < n_params(full)
    assert base.num_features * 2 == full.num_features


def test_manet_split_patches_tile_the_input() -> None:
    x = torch.arange(2 * 3 * 12 * 12, dtype=torch.float32).view(2, 3, 12, 12)
    patches = MANet.split_patches(x)
    assert len(patches) == 4
    assert all(p.shape == (2, 3, 6, 6) for p in patches)
    top = torch.cat(patches[:2], dim=-1)
    bottom = torch.cat(patches[2:], dim=-1)
    torch.testing.assert_close(torch.cat([top, bottom], dim=-2), x)
    torch.testing.assert_close(patches[1], x[..., :6, 6:])  # top-right
    torch.testing.assert_close(patches[2], x[..., 6:, :6])  # bottom-left


def test_manet_fuses_local_and_global_logits() -> None:
    torch.manual_seed(0)
    model = build_model("manet", width=8).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        local, global_ = model.forward_branches(x)
        torch.testing.assert_close(model(x), 0.6 * local + 0.4 * global_)


def test_fsrfer_generator_starts_as_identity() -> None:
    torch.manual_seed(0)
    model = build_model("fsrfer", input_size=16, extractor_width=8, hidden=16, growth=8).eval()
    assert isinstance(model, FSRFER)
    feat = torch.randn(2, model.extractor.stage_widths[model.sr_stage], 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(model.generator(feat), feat)


def test_fresh_fsrfer_reproduces_its_teacher_on_upsampled_input() -> None:
    torch.manual_seed(0)
    teacher = build_model("resnet18", width=8)
    # non-trivial BatchNorm statistics so the comparison is not between two default networks
    teacher.train()
    with torch.no_grad():
        teacher(torch.randn(16, 1, 48, 48) * 2 + 0.3)
    teacher.eval()
    model = build_model("fsrfer", input_size=16, extractor_width=8, hidden=16, growth=8)
    model.extractor.load_state_dict(teacher.state_dict())
    model.eval()
    x = torch.randn(3, 1, 16, 16)
    up = torch.nn.functional.interpolate(x, size=(48, 48), mode="bicubic", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), teacher(up), rtol=1e-4, atol=1e-5)


def test_resnet_stem_to_stage_then_stage_to_logits_equals_forward() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", width=8).eval()
    assert isinstance(model, ResNet)
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        expected = model(x)
        for stage in range(4):
            feat = model.stem_to_stage(x, stage)
            assert feat.shape[1] == model.stage_widths[stage]
            torch.testing.assert_close(model.stage_to_logits(feat, stage), expected)
        maps = model.forward_features(x)
    assert [m.shape[-1] for m in maps] == [24, 12, 6, 3]


@pytest.mark.parametrize("arch,config,size", CASES, ids=[f"{a}-{s}px" for a, _, s in CASES])
def test_batchnorm_folding_keeps_outputs(arch: str, config: dict, size: int) -> None:
    from lrfer.recognizer import fold_batchnorm

    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_chans=1, **config).eval()
    for m in model.modules():  # non-trivial statistics, so that folding has something to get wrong
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    folded = fold_batchnorm(model)
    if arch == "manet":  # its patch loop is not fx-traceable: kept eager, not broken
        assert folded is model
    else:
        assert folded is not model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 1, size, size)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_the_fallback_folding_for_torch_2_1_folds_as_fuse_does() -> None:
    """_fuse_traced runs only where fuse lacks no_trace (torch 2.1): checked on every torch against the
    model as it is, so that it cannot drift unseen on the torch the suite usually runs."""
    from lrfer.recognizer import _fuse_traced, trace_this_thread

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5), torch.nn.BatchNorm1d(5)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = _fuse_traced(trace_this_thread(model))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
