"""The Pareto front of `prune-env compare` (its table and plots run end to end in
test_train)."""

from __future__ import annotations

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
