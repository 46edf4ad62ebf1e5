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


# ------------------------------------------------------------------ forward passes against the papers' wiring
# Each test below recomputes a module's forward from its own sub-modules as the paper (and the module
# docstrings) describe it: a part skipped, swapped or re-ordered in ``forward`` changes the output.
def _nontrivial_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms (eval mode), so that no layer is an identity by accident."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
    return model.eval()


def _channel_attention(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Average- and max-pooled channel descriptors through one shared MLP, summed, sigmoid (CBAM)."""
    avg, peak = x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return x * torch.sigmoid(module.mlp(avg) + module.mlp(peak))


def _spatial_attention(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A convolution over the channel-wise mean and max maps, sigmoid, one weight per position."""
    return x * torch.sigmoid(module.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)))


def _cbam(attention: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Channel attention first, then spatial attention."""
    from lrfer.models.gmenet import ChannelAttention, SpatialAttention

    channel, spatial = attention
    assert isinstance(channel, ChannelAttention) and isinstance(spatial, SpatialAttention)
    return _spatial_attention(spatial, _channel_attention(channel, x))


@torch.no_grad()
def test_gmenet_block_weighs_its_residual_branch_by_channel_then_spatial_attention() -> None:
    """Guards GME-Net's local unit: conv-conv, channel attention (average AND max pooled), spatial
    attention (channel mean AND max maps), each through a sigmoid, before (not after) the shortcut is added."""
    from lrfer.models.gmenet import HybridAttentionBlock

    torch.manual_seed(0)
    block = _nontrivial_batchnorm(HybridAttentionBlock(8, 16, stride=2))
    x = torch.randn(2, 8, 10, 10)
    residual = block.conv2(block.conv1(x))
    expected = torch.relu(_cbam(block.attention, residual) + block.shortcut(x))
    torch.testing.assert_close(block(x), expected)


@torch.no_grad()
def test_quasi_symmetric_global_block_fuses_neighbouring_receptive_fields_around_the_middle_one() -> None:
    """Guards the global module: branches of dilation 1, 2, 3; (small + medium) and (medium + large)
    projected, merged and added back to the input."""
    from lrfer.models.gmenet import QuasiSymmetricGlobalBlock

    torch.manual_seed(0)
    block = _nontrivial_batchnorm(QuasiSymmetricGlobalBlock(8))
    assert [branch[0].dilation for branch in block.branches] == [(1, 1), (2, 2), (3, 3)]
    x = torch.randn(2, 8, 7, 7)
    small, medium, large = (branch(x) for branch in block.branches)
    expected = torch.relu(x + block.merge(block.fuse_small(small + medium) + block.fuse_large(medium + large)))
    torch.testing.assert_close(block(x), expected)


@torch.no_grad()
def test_gmenet_classifies_the_pooled_last_local_map_and_global_module_of_the_half_resolution_map() -> None:
    """Guards the fusion: average-pooled r/4 local map, concatenated with the average-pooled global
    module output of the r/2 map, then the classifier."""
    torch.manual_seed(0)
    model = _nontrivial_batchnorm(build_model("gmenet", width=8, input_size=16))
    assert isinstance(model, GMENet) and model.global_module is not None
    x = torch.randn(2, 1, 16, 16)
    features, maps = model.forward_features(x)
    expected = torch.cat([maps[2].mean(dim=(2, 3)), model.global_module(maps[1]).mean(dim=(2, 3))], dim=1)
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(model(x), model.fc(expected))


@pytest.mark.parametrize("arch,config,size", [("gmenet", {"input_size": 16}, 16), ("baseline", {"input_size": 16}, 16),
                                               ("resnet18", {}, 48), ("manet", {}, 48)])
def test_drop_rate_reaches_the_classifiers_dropout(arch: str, config: dict, size: int) -> None:
    """Guards ``drop_rate``: with 1.0 every feature is dropped in training, so each logit is the
    classifier's bias whatever the face; in eval mode the faces differ again."""
    torch.manual_seed(0)
    model = build_model(arch, width=8, drop_rate=1.0, **config).train()
    x = torch.randn(3, 1, size, size)
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    expected = sum(fc.bias * w for fc, w in zip(fcs, (0.6, 0.4))) if arch == "manet" else fcs[0].bias
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected.expand(3, -1))
        out = model.eval()(x)
    assert not torch.allclose(out[0], out[1])


@torch.no_grad()
def test_manet_branches_follow_the_paper() -> None:
    """Guards MA-Net's two branches: each of the 2x2 patches through its OWN residual stage and CBAM
    (channel then spatial attention), pooled and concatenated; the global branch's Res2Net block
    feeds each channel group's 3x3 conv the previous group's output and adds its input back."""
    from lrfer.models.manet import Res2NetBlock

    torch.manual_seed(0)
    model = _nontrivial_batchnorm(build_model("manet", width=8))
    assert isinstance(model, MANet)
    x = torch.randn(2, 1, 48, 48)
    h = model.stem(x)
    for stage in model.stages:
        h = stage(h)
    local = torch.cat([_cbam(branch.attention, branch.stage(patch)).mean(dim=(2, 3))
                       for branch, patch in zip(model.patches, MANet.split_patches(h))], dim=1)
    res2 = model.global_branch[0]
    assert isinstance(res2, Res2NetBlock)
    groups = torch.chunk(res2.reduce(h), res2.scales, dim=1)
    outs = [groups[0]]
    for conv, group in zip(res2.convs, groups[1:]):
        outs.append(conv(group if len(outs) == 1 else group + outs[-1]))
    g = torch.relu(h + res2.expand(torch.cat(outs, dim=1)))
    for layer in model.global_branch[1:]:
        g = layer(g)
    got_local, got_global = model.forward_branches(x)
    torch.testing.assert_close(got_local, model.local_fc(local))
    torch.testing.assert_close(got_global, model.global_fc(g))


def _dense_block(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ESRGAN's RDB: five convs, each on all earlier (LeakyReLU 0.2) outputs, residual scaled by 0.2."""
    features = [x]
    for i, conv in enumerate(block.convs):
        out = conv(torch.cat(features, dim=1))
        if i < 4:
            features.append(torch.nn.functional.leaky_relu(out, 0.2))
    return x + 0.2 * out


@torch.no_grad()
def test_fsrfer_generator_of_rrdbs_sits_between_the_extractor_and_the_head() -> None:
    """Guards FSR-FER's wiring: bicubic 48 px face -> fixed extractor -> generator (conv_in, RRDBs of
    three dense blocks, each residual scaled by 0.2, conv_out, plus its input) -> the extractor's head.
    The generator is made a non-identity first: a fresh one is the identity and hides a skipped part."""
    torch.manual_seed(0)
    model = _nontrivial_batchnorm(build_model("fsrfer", input_size=16, extractor_width=8, hidden=16, growth=8))
    assert isinstance(model, FSRFER)
    gen = model.generator
    torch.nn.init.normal_(gen.conv_out.weight, std=0.05)
    x = torch.randn(2, 1, 16, 16)
    up = torch.nn.functional.interpolate(x, size=(48, 48), mode="bicubic", align_corners=False)
    feat = model.extractor.stem_to_stage(up, model.sr_stage)
    h = gen.conv_in(feat)
    body = h
    for rrdb in gen.body:
        y = body
        for block in rrdb.blocks:
            y = _dense_block(block, y)
        body = body + 0.2 * y
    super_resolved = feat + gen.conv_out(h + body)
    assert not torch.allclose(super_resolved, feat, atol=1e-3)
    torch.testing.assert_close(gen(feat), super_resolved, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x), model.extractor.stage_to_logits(super_resolved, model.sr_stage),
                               rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_resnet_basic_block_adds_its_shortcut() -> None:
    """Guards the residual connection of the teacher's blocks (identity, or a 1x1 projection when the
    stride or width changes)."""
    from lrfer.models.resnet import BasicBlock

    torch.manual_seed(0)
    for block, x in ((BasicBlock(8, 8), torch.randn(2, 8, 6, 6)), (BasicBlock(8, 16, stride=2), torch.randn(2, 8, 6, 6))):
        block = _nontrivial_batchnorm(block)
        torch.testing.assert_close(block(x), torch.relu(block.conv2(block.conv1(x)) + block.shortcut(x)))


#: A value other than the default for every option of every builder (a new option must be added here).
OTHER_VALUES: dict[str, object] = {"num_classes": 5, "in_chans": 3, "width": 12, "input_size": 12, "blocks_per_stage": 2,
                                   "global_blocks": 2, "drop_rate": 0.5, "extractor_width": 12, "sr_stage": 1,
                                   "hidden": 24, "growth": 12, "num_blocks": 3}


@pytest.mark.parametrize("arch", list_architectures())
def test_every_builder_option_reaches_the_model(arch: str) -> None:
    """Guards the builders' wiring: each option of an architecture (as `lrfer train --config KEY=VALUE`
    sets it) changes the network it builds: its layers' shapes, strides, counts or dropout, or the
    input size it records. An option passed on as a constant would be silently ignored."""
    import inspect

    from lrfer.models import _builder

    default = build_model(arch)
    for name, param in inspect.signature(_builder(arch)).parameters.items():
        value = {1: 2, 2: 1}[param.default] if name == "stem_stride" else OTHER_VALUES[name]
        assert value != param.default, name
        model = build_model(arch, **{name: value})
        if name == "input_size":
            assert model.input_size == value and default.input_size == param.default
        else:
            assert repr(model) != repr(default), f"{arch}: {name}={value!r} builds the default network"
