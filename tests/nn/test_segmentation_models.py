"""The segmentation zoo: every network builds untrained, outputs scores per pixel at the input's
size, compacts exactly under random masks, and is stored and read back as data."""

from __future__ import annotations

import pytest
import torch

from prune_env.catalog import SEGMENTATION_MODELS
from prune_env.nn.groups import filter_groups, merge_keep
from prune_env.nn.models import build_model
from prune_env.nn.surgery import compact
from prune_env.training.checkpoint import load_compact, save_compact


def random_keep(model, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep: dict[str, torch.Tensor] = {}
    for group in filter_groups(model):
        mask = torch.rand(group.size, generator=g) < 0.6
        mask[0] = True
        merge_keep(keep, group.keep_for(mask))
    return keep


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
def test_each_segmentation_network_compacts_exactly(name):
    torch.manual_seed(0)
    model = build_model(name, 1, 11, (64, 64)).eval()
    x = torch.randn(2, 1, 64, 64)
    assert model(x).shape == (2, 11, 64, 64)
    before = sum(p.numel() for p in model.parameters())
    small = compact(model, random_keep(model, 1))  # compares with the masked network itself
    assert small(x).shape == (2, 11, 64, 64)
    assert sum(p.numel() for p in small.parameters()) < 0.8 * before


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
def test_a_compact_segmentation_network_is_stored_as_data(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 3, 5, (64, 64)).eval()
    small = compact(model, random_keep(model, 2))
    loaded, _ = load_compact(save_compact(tmp_path / "compact.pt", small, {}))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), small(x))


def test_an_unknown_segmentation_name_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        build_model("unet-resnet999", 3, 5, (64, 64))
