"""The Pareto front of `prune-env compare` (its table and plots run end to end in
test_train)."""

from __future__ import annotations

import pytest

from prune_env.cli.pareto import pareto_front


def test_pareto_front_keeps_the_runs_nothing_beats():
    points = [(0.5, 0.80), (0.6, 0.90), (0.7, 0.85), (0.6, 0.70), (1.0, 0.91)]
    assert pareto_front(points) == [0, 1, 4]


def test_only_run_directories_are_compared(tmp_path):
    """A glob over a demo directory also matches compare.csv and the plots' folder."""
    from prune_env.cli.compare import is_run

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "args.json").write_text("{}")
    (tmp_path / "compare.csv").write_text("")
    (tmp_path / "pareto").mkdir()
    assert [p.name for p in sorted(tmp_path.iterdir()) if is_run(p)] == ["run"]


def test_the_pareto_plot_draws_the_base_the_target_and_each_ratios_interval():
    from matplotlib.container import ErrorbarContainer

    from prune_env.cli.pareto import pareto_figure

    rows = [{"method": m, "measured_ratio": r, "ratio_low": r - 0.02, "ratio_high": r + 0.03,
             "test_acc": a, "base_test_acc": 0.9, "target": 0.7, "cost": "latency"}
            for m, r, a in (("l1", 0.69, 0.85), ("swd", 0.71, 0.87))]
    ax = pareto_figure(rows).axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2
    (segments,) = bars[0].lines[2]  # the horizontal bar of l1's point: [0.67, 0.72]
    assert segments.get_segments()[0][:, 0].tolist() == pytest.approx([0.67, 0.72])
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"] == [0.7]
    labels = ax.get_legend_handles_labels()[1]
    assert "base" in labels and "target" in labels


def test_a_sweeps_table_is_the_mean_and_spread_over_seeds():
    from prune_env.cli.compare import summarize

    def run(method, seed, acc, ratio, verdict):
        return {"model": "resnet20", "method": method, "target": 0.7, "seed": seed,
                "test_acc": acc, "measured_ratio": ratio, "flops_ratio": 0.5, "cost": "latency",
                "ratio_low": ratio - 0.01, "ratio_high": ratio + 0.01, "target_met": verdict,
                "hardware": "cpu:x", "node": f"10.0.0.{seed + 1}", "speedup": 1 / ratio}

    rows = [run("l1", 0, 0.80, 0.68, "met"), run("l1", 1, 0.84, 0.72, "missed"),
            run("l1", 2, 0.82, 0.70, "within noise"), run("swd", 0, 0.9, 0.69, "met")]
    l1, swd = summarize(rows)
    assert l1["seeds"] == 3 and l1["test_acc"] == pytest.approx(0.82)
    assert l1["test_acc_sd"] == pytest.approx(0.02) and l1["measured_ratio_sd"] == pytest.approx(0.02)
    assert l1["target_met"] == "met 1/3, missed 1/3, within noise 1/3"
    assert l1["node"] == "10.0.0.1, 10.0.0.2, 10.0.0.3"
    assert swd["seeds"] == 1 and swd["test_acc_sd"] is None
    assert (swd["ratio_low"], swd["ratio_high"]) == pytest.approx((0.68, 0.7))  # its own interval
