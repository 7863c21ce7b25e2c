"""Rate–distortion evaluation: codecs behind one interface, runs, BD-rate, plots.

>>> from medvae.evaluation import expand
>>> from medvae.evaluation.bdrate import bd_table
>>> from medvae.io.slices import file_slices
>>> from medvae.evaluation.run import evaluate
>>> points = expand("jpeg2000,jpegls,medvae=runs/a/best.pt")
>>> result = evaluate(file_slices("ct.dcm"), points)  # per-image rows + summary
>>> bd_table(result.summary, anchor="jpeg2000")            # % rate change at equal quality

Modules: :mod:`~medvae.evaluation.codecs` (registry, protocol), one module per
codec family, :mod:`~medvae.evaluation.datasets` (what to evaluate on),
:mod:`~medvae.evaluation.run` (the loop, CSV and JSON),
:mod:`~medvae.evaluation.bdrate`, :mod:`~medvae.evaluation.plots`.
"""

from medvae.evaluation.codecs import ImageCodec, expand, families, parse_spec, sweep

__all__ = ["ImageCodec", "expand", "families", "parse_spec", "sweep"]
