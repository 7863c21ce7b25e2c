"""The rate-control figure: one dot per image at its deviation from the target."""

from __future__ import annotations

import numpy as np

from medvae.evaluation.plots import rate_control_plot
from medvae.rate_control import Target


def test_rate_control_plot_puts_each_image_at_its_deviation(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, x, y, *a, **k: drawn.append((self.get_ylabel(), list(x), list(y))) or plot(self, x, y, *a, **k))
    achieved = {Target(ratio=10): [10.3, 10.0], Target(bpp=0.5): [0.49], Target(psnr=50): [50.2, 51.0]}
    paths = rate_control_plot(achieved, tmp_path / "control", title="three targets")
    assert sorted(p.name for p in paths) == ["control.png", "control.svg"] and all(p.stat().st_size > 1000 for p in paths)
    dots = [(x, np.round(y, 6).tolist()) for _, x, y in drawn]
    assert dots == [([0, 0], [3.0, 0.0]), ([1], [-2.0]), ([0, 0], [0.2, 1.0])]  # % of 10:1 and of 0.5 bpp; dB above 50
    assert rate_control_plot({Target(psnr=45): [45.5]}, tmp_path / "only_psnr")  # one kind of target alone
