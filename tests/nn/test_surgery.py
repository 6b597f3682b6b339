"""Surgery: compact networks equal the masked originals, for every architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from prune_env.measure import count_params
from prune_env.nn.blocks import ScatterBlock, Shortcut
from prune_env.nn.groups import filter_groups, merge_keep
from prune_env.nn.layers import ChannelShift
from prune_env.nn.models import build_model, example_input
from prune_env.nn.surgery import (
    SurgeryError,
    compact_report,
    following_batchnorms,
    masked_trace,
    prunable_convs,
    validate_keep,
)

ARCHITECTURES = ["resnet20", "resnet32", "vgg11", "vgg16", "mobilenetv2", "resnet18",
                 "mobilenet_v2"]
_models: dict[str, nn.Module] = {}


def model_for(name: str) -> nn.Module:
    """A randomly initialised model with random BN statistics (non-trivial shifts)."""
    if name not in _models:
        torch.manual_seed(0)
        model = build_model(name, 3, 10, (32, 32))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-1, 1)
        _models[name] = model.eval()
    return _models[name]


def masked_output(model: nn.Module, keep: dict, x: torch.Tensor) -> torch.Tensor:
    """The reference: the original network with dropped channels zeroed after their BN."""
    masks = validate_keep(model, keep)
    out = {}
    with torch.no_grad():
        bn_of = following_batchnorms(model, x)
        handle = model.register_forward_hook(lambda _m, _i, o: out.setdefault("y", o))
        masked_trace(model, masks, bn_of, x)
    handle.remove()
    return out["y"]


def random_keep(model: nn.Module, draw, empty_prob: float) -> dict:
    """Random masks per conv; groups that cannot be emptied keep at least one filter."""
    removable = {c for g in filter_groups(model) if g.removable for c in g.convs}
    keep = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        seed = draw(st.integers(0, 2**31 - 1))
        gen = torch.Generator().manual_seed(seed)
        ratio = torch.rand(1, generator=gen).item()
        mask = torch.rand(m.out_channels, generator=gen) < ratio
        if torch.rand(1, generator=gen).item() < empty_prob:
            mask[:] = False
        if not mask.any() and name not in removable:
            mask[torch.randint(m.out_channels, (1,), generator=gen)] = True
        keep[name] = mask
    return keep


def assert_equivalent(model: nn.Module, keep: dict) -> nn.Module:
    x = example_input(model, 2)
    before = copy.deepcopy(model.state_dict())
    result = compact_report(model, keep, x)
    for key, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(value, before[key]), key
    expected = masked_output(model, keep, x)
    with torch.no_grad():
        got = result.model.eval()(x)
    assert got.shape == expected.shape
    rel = (got - expected).abs().max() / expected.abs().max().clamp_min(1e-6)
    assert rel < 1e-4, f"relative error {rel:.2e}"
    return result.model


@pytest.mark.parametrize("arch", ARCHITECTURES)
# no shrinking: a failing mask set is printed by its seeds, and shrinking it takes minutes
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data())
def test_compact_equals_masked_network(arch, data):
    model = model_for(arch)
    keep = random_keep(model, data.draw, empty_prob=0.15)
    compact = assert_equivalent(model, keep)
    if any(not m.all() for m in keep.values()):
        assert count_params(compact) < count_params(model)


def test_all_dropped_residual_branch_becomes_shortcut_plus_shift():
    model = model_for("resnet20")
    keep = {"3.branch.0": torch.zeros(16, dtype=torch.bool)}
    compact = assert_equivalent(model, keep)
    block = compact.get_submodule("3")
    assert isinstance(block, Shortcut) and block.shortcut is None  # an identity shortcut
    assert isinstance(block.shift, ChannelShift)  # the BN shift the branch left behind
    assert count_params(compact) == count_params(model) - 2 * (16 * 16 * 9 + 32) + 16


def test_projection_block_folds_shift_into_shortcut_bn():
    model = model_for("resnet20")
    compact = assert_equivalent(model, {"6.branch.0": torch.zeros(32, dtype=torch.bool)})
    block = compact.get_submodule("6")
    assert isinstance(block, Shortcut) and block.shift is None  # folded into the BN:
    assert isinstance(block.shortcut[-1], nn.BatchNorm2d)


def test_mobilenet_expansion_and_depthwise_shrink_together():
    model = model_for("mobilenetv2")
    half = torch.arange(144) % 2 == 0
    # the depthwise conv, unnamed, keeps all its filters: the union keeps all 144 channels
    result = compact_report(model, {"5.branch.0": half})
    assert result.model.get_submodule("5.branch.3").out_channels == 144
    assert result.unions == [{"5.branch.0": 72}]
    group = next(g for g in filter_groups(model) if g.leader == "5.branch.0")
    assert group.convs == ("5.branch.0", "5.branch.3")
    compact = assert_equivalent(model, group.keep_for(half))
    assert compact.get_submodule("5.branch.3").out_channels == 72
    assert compact.get_submodule("5.branch.6").in_channels == 72


def test_coupled_masks_keep_union_and_report_it():
    model = model_for("resnet20")
    a = torch.zeros(16, dtype=torch.bool)
    a[:4] = True
    b = torch.zeros(16, dtype=torch.bool)
    b[2:8] = True
    x = example_input(model, 2)
    result = compact_report(model, {"0": a, "3.branch.3": b}, x)
    assert result.model.get_submodule("0").out_channels == 16  # other convs keep all
    result = compact_report(model, {"0": a, "3.branch.3": b, "4.branch.3": a,
                                    "5.branch.3": a}, x)
    assert result.model.get_submodule("0").out_channels == 8  # union of 0..3 and 2..7
    assert result.unions == [{"0": 4, "4.branch.3": 4, "5.branch.3": 4, "3.branch.3": 2}]
    assert_equivalent(model, {"0": a, "3.branch.3": b, "4.branch.3": a, "5.branch.3": a})


def test_emptying_a_plain_layer_is_refused():
    model = model_for("vgg11")
    with pytest.raises(SurgeryError, match="keep at least one filter"):
        compact_report(model, {"0": torch.zeros(64, dtype=torch.bool)})


def test_bad_keep_is_a_clear_error():
    model = model_for("resnet20")
    with pytest.raises(SurgeryError, match="not conv layers"):
        compact_report(model, {"nope": torch.ones(3)})
    with pytest.raises(SurgeryError, match="has 3 entries but the layer has 16"):
        compact_report(model, {"0": torch.ones(3)})


def test_compact_twice_stays_exact():
    """The environment prunes an already compact network at every step."""
    model = model_for("resnet20")
    first = compact_report(model, {"3.branch.0": torch.zeros(16, dtype=torch.bool),
                                   "6.branch.0": torch.arange(32) < 20}).model.eval()
    first.input_shape = model.input_shape
    keep = {"0": torch.arange(16) % 3 != 0, "4.branch.0": torch.arange(16) < 5}
    assert_equivalent(first, keep)


def test_batchnorm_map_of_the_base_serves_its_pruned_copies():
    """The environment passes the base network's conv -> BN map instead of tracing it again
    at every step: same network as when it is traced."""
    model = model_for("resnet20")
    x = example_input(model, 2)
    with torch.no_grad():
        base_map = following_batchnorms(model.eval(), x)
    first = compact_report(model, {"3.branch.0": torch.zeros(16, dtype=torch.bool),
                                   "9.branch.0": torch.arange(64) < 40}).model.eval()
    keep = {"0": torch.arange(16) % 3 != 0, "10.branch.0": torch.arange(64) < 9}
    traced = compact_report(first, keep).model.eval()
    given = compact_report(first, keep, bn_of=base_map).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(given(x), traced(x))
    assert str(given) == str(traced)


def test_removed_branch_with_zero_constant_still_trains():
    """A fresh network's BN shifts are 0: the block becomes act(x), which must not be in place."""
    model = build_model("resnet20", 1, 10, (16, 16)).eval()
    compact = compact_report(model, {"3.branch.0": torch.zeros(16, dtype=torch.bool)}).model
    block = compact.get_submodule("3")
    assert isinstance(block, Shortcut) and block.shortcut is None and block.shift is None
    compact.train()
    compact(torch.randn(4, 1, 16, 16)).sum().backward()  # raised "modified by an inplace op"
    assert compact.get_submodule("0").weight.grad is not None


def test_a_failure_inside_the_library_is_a_surgery_error_naming_the_network(monkeypatch):
    from prune_env.nn import surgery

    def broken(*_args, **_kwargs):
        raise IndexError("index 7 is out of bounds for dimension 0 with size 4")

    monkeypatch.setattr(surgery, "dependency_graph", broken)
    model = model_for("resnet20")
    keep = {"0": torch.arange(16) < 8}
    with pytest.raises(SurgeryError, match="resnet20 while tracing the network.*IndexError"):
        compact_report(model, keep)


def test_a_network_that_differs_from_the_masked_one_is_refused(monkeypatch):
    """Were a step of surgery wrong (here: coupled convs' own dropped channels inside the
    union are not zeroed), compact refuses its network instead of returning it."""
    from prune_env.nn import surgery

    monkeypatch.setattr(surgery, "zero_fill", lambda *a, **k: {})
    model = model_for("resnet20")  # the stem and the branches closing on it: one group
    keep = {n: torch.arange(m.out_channels) % (2 if n == "0" else 3) == 0
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    with pytest.raises(SurgeryError, match="differs from the masked one"):
        compact_report(model, keep)


class DenseLike(nn.Module):
    """DenseNet's pattern, minimal: each layer reads the concatenation of all earlier
    outputs through a BatchNorm; the head is a linear layer on pooled features."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.l1, self.l2 = nn.Conv2d(4, 2, 1), nn.Conv2d(6, 2, 1)
        self.bn2, self.bno = nn.BatchNorm2d(6), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x0 = self.stem(x)
        l1 = self.l1(x0)
        l2 = self.l2(torch.relu(self.bn2(torch.cat([x0, l1], 1))))
        y = torch.relu(self.bno(torch.cat([x0, l1, l2], 1)))
        return self.head(y.mean((2, 3)))


def test_masks_on_several_producers_of_shared_concatenations_stay_exact():
    """Torch-Pruning keeps a concat's traced offsets after pruning one of its inputs: without
    tracing anew, the second producer's channels were read at the wrong offsets (DenseNet,
    GoogLeNet, SqueezeNet and DeepLabV3's ASPP were refused). The constants left by the dropped
    channels reach the linear head through BatchNorm and pooling and are folded into it."""
    torch.manual_seed(0)
    model = DenseLike().eval()
    for bn in (model.bn2, model.bno):
        bn.running_mean.uniform_(-1, 1)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    keep = {"stem": torch.tensor([1, 0, 1, 1]).bool(), "l1": torch.tensor([0, 1]).bool(),
            "l2": torch.tensor([1, 0]).bool()}
    result = compact_report(model, keep, x)  # compares with the masked network itself
    assert (result.model.bno.num_features, result.model.head.in_features) == (5, 5)
    expected = masked_output(model, keep, x)
    assert torch.allclose(result.model(x), expected, atol=1e-5)


class ConcatDepthwise(nn.Module):
    """DeepLabV3+'s decoder, minimal: two branches concatenated, then a depthwise conv, whose
    filters are therefore split over one group per input of the concat."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10, bias=False)
        self.bn = nn.BatchNorm2d(10)
        self.pw = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.pw(self.bn(self.dw(torch.cat([self.b(x), self.a(x)], 1))))


def test_a_depthwise_conv_after_a_concatenation_keeps_every_group_of_its_filters():
    """The group of ``a`` covers only the depthwise conv's last 4 filters: the conv was taken
    as decided by it, its first 6 filters were never pruned, and its mask was read at the
    positions of the shrunk conv; smp's DeepLabV3+ (all encoders) was refused."""
    torch.manual_seed(0)
    model = ConcatDepthwise().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    keep = {"a.0": torch.tensor([1, 0, 0, 1]).bool(), "b.0": torch.tensor([1, 0, 1, 1, 1, 1]).bool(),
            "dw": torch.tensor([1, 0, 1, 0, 1, 1, 1, 0, 0, 1]).bool()}
    result = compact_report(model, keep, x)  # compares with the masked network itself
    # a and dw agree on a's part (2 of 4 go); on b's part only filter 1 is dropped by both
    assert result.out_channels == {"a.0": 2, "b.0": 5, "dw": 7, "pw": 5}
    assert torch.allclose(result.model(x), masked_output(model, keep, x), atol=1e-5)


def test_a_conv_in_two_groups_gets_full_width_masks_that_merge():
    """The depthwise conv after the concatenation is in the group of ``b`` (filters 0-5) and
    in the group of ``a`` (6-9): each group's mask covers all 10 filters, and `merge_keep`
    keeps what both keep (smp's DeepLabV3+ had a 256-entry mask for a 304-filter conv)."""
    model = ConcatDepthwise().eval()
    model.input_shape = (3, 8, 8)
    groups = {g.leader: g for g in filter_groups(model)}
    assert groups["b.0"].convs == ("b.0", "dw") and groups["a.0"].convs == ("a.0", "dw")
    keep: dict[str, torch.Tensor] = {}
    for group in groups.values():
        merge_keep(keep, group.keep_for(torch.arange(group.size) % 2 == 0))
    assert keep["dw"].tolist() == [True, False] * 5
    assert compact_report(model, keep).out_channels == {"a.0": 2, "b.0": 3, "dw": 5, "pw": 5}


class GroupNormed(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(groups, 8)
        self.unused = nn.Conv2d(8, 8, 1)  # an encoder's classifier that forward never calls
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.conv(x))))


def test_filters_before_a_groupnorm_that_mixes_channels_are_refused_and_not_offered():
    """FPN's decoder (smp) normalises groups of 4 channels: dropping one would change the
    others' statistics. Filters before per-channel groups are dropped exactly."""
    model = GroupNormed(groups=2).eval()
    model.input_shape = (3, 8, 8)
    half = torch.arange(8) % 2 == 0
    with pytest.raises(SurgeryError, match="'conv' feeds 'norm', a GroupNorm"):
        compact_report(model, {"conv": half})
    assert prunable_convs(model) == ["out"]
    assert filter_groups(model) == []
    per_channel = GroupNormed(groups=8).eval()
    per_channel.input_shape = (3, 8, 8)
    assert compact_report(per_channel, {"conv": half}).out_channels["conv"] == 4
    assert [g.leader for g in filter_groups(per_channel)] == ["conv"]


def test_a_conv_the_forward_pass_never_calls_is_refused():
    model = GroupNormed(groups=8).eval()
    model.input_shape = (3, 8, 8)
    with pytest.raises(SurgeryError, match="'unused' is never called"):
        compact_report(model, {"unused": torch.arange(8) < 4})
    assert "unused" not in prunable_convs(model)


class GroupedPair(nn.Module):
    """ResNeXt's and RegNet's pattern, minimal: a 1x1 conv into a conv of 4 groups."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.g = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),
                               nn.BatchNorm2d(8), nn.ReLU())
        self.out = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.out(self.g(self.a(x)))


@pytest.mark.parametrize("conv, mask, expected", [
    # parts (0,1) (2,3) (4,5) (6,7) keep 1, 2, 1, 1: the second keeps both, one zeroed
    ("a.0", [1, 0, 1, 1, 0, 1, 1, 0], {"a.0": 8, "g.0": 8}),
    # one per part at other positions: Torch-Pruning read every part at the first's
    ("a.0", [1, 0, 0, 1, 0, 1, 1, 0], {"a.0": 4, "g.0": 8}),
    ("g.0", [1, 0, 0, 1, 0, 1, 1, 0], {"a.0": 8, "g.0": 4}),
])
def test_grouped_convs_keep_equal_parts_and_their_own_kernels(conv, mask, expected):
    """Torch-Pruning cut grouped convs into unequal parts (RegNet, ResNeXt: IndexError) and
    kept every part's kernel columns at the first part's positions (a different network)."""
    torch.manual_seed(0)
    model = GroupedPair().eval()
    x = torch.randn(2, 3, 8, 8)
    keep = {conv: torch.tensor(mask).bool()}
    result = compact_report(model, keep, x)  # compares with the masked network itself
    assert {k: result.out_channels[k] for k in expected} == expected
    assert torch.allclose(result.model(x), masked_output(model, keep, x), atol=1e-5)


def test_filters_before_a_channels_last_layernorm_are_refused_and_not_offered():
    """ConvNeXt's pattern: a depthwise conv, a permute to channels-last, a LayerNorm over
    channels (and LayerNorm2d on its stem and downsampling layers)."""
    from torchvision.models.convnext import LayerNorm2d
    from torchvision.ops import Permute

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), LayerNorm2d(8),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), Permute([0, 2, 3, 1]),
                          nn.LayerNorm(8), Permute([0, 3, 1, 2]), nn.Conv2d(8, 2, 1)).eval()
    model.input_shape = (3, 8, 8)
    for conv, norm in (("0", "1"), ("2", "4")):
        with pytest.raises(SurgeryError, match=f"'{conv}' feeds '{norm}', a LayerNorm"):
            compact_report(model, {conv: torch.arange(8) < 4})
    assert prunable_convs(model) == ["6"]


@pytest.mark.parametrize("arch, to_onnx", [("resnet20", True), ("mobilenetv2", False),
                                           ("resnet18", False)])
def test_scatter_coupling_keeps_each_branch_to_its_own_channels(arch, to_onnx, tmp_path):
    """Tessier et al.'s adder: with per-conv masks, each branch's last conv computes only its
    own channels and the block index-adds them into the union; exact, smaller than the union,
    recorded, and exported to ONNX (ScatterND) where onnxruntime agrees. Our residual blocks
    and torchvision's."""
    import onnx

    from prune_env.measure import count_flops
    from prune_env.nn.record import from_record, to_record
    from prune_env.runs.export import export

    model = model_for(arch)
    generator = torch.Generator().manual_seed(1)
    keep = {n: torch.rand(m.out_channels, generator=generator) < 0.5
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for mask in keep.values():
        mask[0] = True
    union = compact_report(model, keep)
    scatter = compact_report(model, keep, coupling="scatter")  # checked against the masked net
    assert scatter.scattered and not union.scattered
    flops = [count_flops(r.model, (3, 32, 32)) for r in (union, scatter)]
    assert flops[1] < 0.95 * flops[0]
    block, kept = next(iter(scatter.scattered.items()))
    assert scatter.model.get_submodule(block).scatter.numel() == kept
    if arch == "resnet18":  # torchvision's BasicBlock becomes a ScatterBlock, names kept
        assert isinstance(scatter.model.get_submodule(block), ScatterBlock)
        assert scatter.model.get_submodule(f"{block}.conv2").out_channels == kept
    x = torch.randn(2, 3, 32, 32)
    rebuilt = from_record(to_record(scatter.model))
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), scatter.model(x), atol=1e-5)
    if not to_onnx:  # an export takes seconds: one network shows it
        return
    exported = export(scatter.model, (3, 32, 32), tmp_path, "onnx")  # compared in onnxruntime
    assert "ScatterND" in {n.op_type for n in onnx.load(exported.path).graph.node}


def test_an_unknown_coupling_is_refused():
    with pytest.raises(SurgeryError, match="unknown coupling 'sum'"):
        compact_report(model_for("resnet20"), {}, coupling="sum")
