"""The latency table corrected by measurement: the fitted line, the probes, the meter's use."""

from __future__ import annotations

import pytest
import torch

from prune_env.measure.correction import PROBE_KEEP, TableCorrection, probe_networks
from prune_env.measure.costs import CostMeter
from prune_env.measure.latency import Latency
from prune_env.nn.models import build_model

# timed alone: a test beside them would move their timings
pytestmark = pytest.mark.timing


def test_the_line_through_the_base_fits_an_optimistic_table():
    fitted = TableCorrection.fit([(0.5, 0.4), (0.8, 0.76)])
    assert fitted.slope == pytest.approx(1.2)  # (0.5*0.6 + 0.2*0.24) / (0.25 + 0.04)
    assert fitted.ratio(1.0) == 1.0 and fitted.ratio(0.7) == pytest.approx(0.64)
    assert fitted.ms(70.0, 100.0) == pytest.approx(64.0)
    assert fitted.residuals() == pytest.approx([0.0, 0.0])
    assert TableCorrection().ratio(0.7) == 0.7  # no probes: the table as it is
    with pytest.raises(ValueError, match="cheaper than the base"):
        TableCorrection.fit([(1.0, 1.0)])


def test_probes_are_smaller_copies_of_random_widths():
    torch.manual_seed(0)
    base = build_model("resnet20", 1, 10, (16, 16)).eval()
    probes = probe_networks(base, 3, seed=1)
    widths = [[m.out_channels for m in p.modules() if isinstance(m, torch.nn.Conv2d)]
              for p in probes]
    full = [m.out_channels for m in base.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len({tuple(w) for w in widths}) == 3  # three different networks
    for w in widths:
        assert all(PROBE_KEEP[0] * f - 1 <= k <= PROBE_KEEP[1] * f + 1
                   for k, f in zip(w[1:-1], full[1:-1], strict=True))
    again = probe_networks(base, 3, seed=1)
    assert [[m.out_channels for m in p.modules() if isinstance(m, torch.nn.Conv2d)]
            for p in again] == widths  # the seed fixes them


def test_the_meter_corrects_its_predictions_by_the_probes_measurement(tmp_path, monkeypatch):
    """A machine on which every cut buys 1.5x what the table says: after `correct`, the
    meter predicts what that machine measures; the base's own prediction is unchanged; a
    second meter on the same table reads the fit back without timing anything."""
    torch.manual_seed(0)
    base = build_model("resnet20", 1, 10, (16, 16)).eval()
    table = str(tmp_path / "table.json")
    meter = CostMeter("latency", (1, 16, 16), threads=1, table=table)
    meter.costs(base, calibrate=True)
    base_ms = meter.predict_ms(base)

    def machine(models, batch=None, repeats=10, blocks=7):
        truth = {name: 1 - 1.5 * (1 - meter.table_ms(meter.shapes(m)) / base_ms)
                 for name, m in models.items()}
        return {name: Latency(100 * r, 100 * r, 0.0, 1, 1, "cpu", 1) for name, r in
                truth.items()}

    monkeypatch.setattr(meter, "measure", machine)
    correction = meter.correct(base, probes=3, seed=0)
    assert correction.slope == pytest.approx(1.5)
    assert meter.predict_ms(base) == pytest.approx(base_ms)
    probe = probe_networks(base, 1, seed=5)[0]
    raw = meter.table_ms(meter.shapes(probe)) / base_ms
    assert meter.predict_ms(probe) / base_ms == pytest.approx(1 - 1.5 * (1 - raw))

    again = CostMeter("latency", (1, 16, 16), threads=1, table=table)
    again.costs(base, calibrate=True)
    monkeypatch.setattr(again, "measure", lambda *a, **k: pytest.fail("timed again"))
    assert again.correct(base, probes=3, seed=0).slope == pytest.approx(1.5)


def test_the_meter_closes_the_loop_on_the_run_s_own_networks(tmp_path, monkeypatch):
    """A machine on which the table is right for random widths (slope 1) but a network the
    run made measures 0.05 above its prediction: observing it moves the line onto it, the
    probes still count, and the base stays the base."""
    torch.manual_seed(0)
    base = build_model("resnet20", 1, 10, (16, 16)).eval()
    meter = CostMeter("latency", (1, 16, 16), threads=1, table=str(tmp_path / "t.json"))
    meter.costs(base, calibrate=True)
    base_ms = meter.predict_ms(base)
    (made,) = probe_networks(base, 1, seed=7)
    made_raw = meter.table_ms(meter.shapes(made)) / base_ms

    def machine(models, batch=None, repeats=10, blocks=7):
        ratio = {name: meter.table_ms(meter.shapes(m)) / base_ms for name, m in models.items()}
        ratio = {name: r + (0.05 if models[name] is made else 0.0) for name, r in ratio.items()}
        return {name: Latency(100 * r, 100 * r, 0.0, 1, 1, "cpu", 1)
                for name, r in ratio.items()}

    monkeypatch.setattr(meter, "measure", machine)
    assert meter.correct(base, probes=2, seed=0).slope == pytest.approx(1.0)
    correction = meter.observe(base, made)
    assert correction.observed == 1 and len(correction.points) == 3
    assert correction.points[-1] == pytest.approx((made_raw, made_raw + 0.05))
    assert correction.slope < 1  # the table was optimistic for this network
    assert meter.predict_ms(made) / base_ms > made_raw  # closer to what it measured
    assert meter.predict_ms(base) == pytest.approx(base_ms)
    # alone (no probes), one observed network is predicted as it measured
    alone = CostMeter("latency", (1, 16, 16), threads=1, table=str(tmp_path / "t.json"))
    alone.costs(base, calibrate=True)
    monkeypatch.setattr(alone, "measure", machine)
    alone.observe(base, made)
    assert alone.predict_ms(made) / base_ms == pytest.approx(made_raw + 0.05)
    assert alone.observe(base, base).observed == 2  # the base adds a point that moves nothing
    assert alone.predict_ms(made) / base_ms == pytest.approx(made_raw + 0.05)
