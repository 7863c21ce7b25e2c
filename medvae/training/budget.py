"""Wall-time budgets for machines lent for a fixed time: how many steps still fit."""

from __future__ import annotations

#: Share of the budget the training steps may use; the rest is kept for validation, checkpoints
#: and export.
MARGIN = 0.9


def steps_that_fit(done: int, elapsed: float, rate: float, budget_seconds: float, margin: float = MARGIN) -> int:
    """``done`` plus the steps that fit, at ``rate`` steps a second, before ``margin`` of the
    budget is spent (``elapsed`` seconds of it are); never fewer than ``done``."""
    return done + max(0, int((margin * budget_seconds - elapsed) * rate))
