"""The whole zoo (`make bench`, about 12 minutes on 2 cores): every torchvision CNN that builds
at 64 px and smp's U-Net, FPN and DeepLabV3+ on four encoders compact exactly with random masks
and one emptied residual branch, but ConvNeXt, where nothing shrinks: its convs feed
LayerNorms (not prunable exactly) or are coupled to its unmasked depthwise convs."""

from __future__ import annotations

import pytest

#: Nothing shrinks today (README, "Surgery on the zoo").
UNCHANGED = ("convnext_",)


@pytest.mark.bench
def test_the_whole_zoo_is_exact_but_convnext(load_script):
    zoo = load_script("surgery_zoo")
    rows = [zoo.try_model(name, family, build, 64, 0.5, 0, 60.0)
            for name, (family, build) in sorted(zoo.zoo(64).items())]
    by_result = {r.model: r.result for r in rows}
    assert sum(r.result == "exact" for r in rows) >= 60, zoo.table(rows)
    for row in rows:
        expected = "unchanged" if row.model.startswith(UNCHANGED) else "exact"
        assert row.result in (expected, "skipped"), (row.model, row.why)
    assert all(by_result[f"smp.{a}({e})"] == "exact" for a in ("Unet", "FPN", "DeepLabV3Plus")
               for e in ("resnet18", "resnet34", "mobilenet_v2", "efficientnet-b0"))


def test_the_zoo_script_refuses_an_unknown_model_with_exit_code_2(load_script, capsys):
    assert load_script("surgery_zoo").main(["--models", "no_such_net"]) == 2
    assert "unknown models: no_such_net" in capsys.readouterr().err
