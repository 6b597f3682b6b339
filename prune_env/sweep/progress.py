"""The sweep on the terminal: one progress bar over its runs (done, running, failed, ETA),
and a line as each run ends."""

from __future__ import annotations

from tqdm import tqdm

from prune_env.sweep.ledger import Outcome


class SweepView:
    """Progress of ``total`` runs of which at most ``slots`` run at once."""

    def __init__(self, total: int, slots: int):
        self.slots, self.failed = slots, 0
        self.shown: tuple[int, int, int] | None = None
        self.bar = tqdm(total=total, desc="sweep", unit="run", dynamic_ncols=True)
        self.running(total)

    def running(self, pending: int) -> None:
        """``pending`` runs not ended yet: the cluster runs `slots` of them, the rest wait."""
        counts = (min(pending, self.slots), max(pending - self.slots, 0), self.failed)
        if counts != self.shown:  # redrawn on a change only: logs stay readable
            self.shown = counts
            self.bar.set_postfix(running=counts[0], queued=counts[1], failed=counts[2])

    def ended(self, outcome: Outcome) -> None:
        """A run ended: counted, and said in one line."""
        self.failed += outcome.status == "failed"
        where = f"{outcome.host} ({outcome.node})" if outcome.node else "?"
        said = (f"-> {outcome.run}" if outcome.status == "finished"
                else f"FAILED: {outcome.error} (log: {outcome.log})")
        self.bar.write(f"{outcome.entry}: {outcome.status} on {where} in "
                       f"{outcome.seconds:.0f} s {said}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
