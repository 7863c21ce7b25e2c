"""``rnn-conv``: a progressive convolutional-LSTM codec with binary codes (Toderici et al., CVPR 2017).

Each iteration codes the residual of the reconstruction so far into ``M`` bits per 16×16
block and adds what the decoder makes of them, so one network trained once decodes at any
iteration count from 1 to :attr:`RNNConv.max_iterations` (``M/256`` bpp per iteration before
entropy coding). It is the learned variable-rate baseline of the X-ray literature
(RNN-Conv with multistage pooling), kept here as a comparison, not as the default codec.

.. code-block:: none

    x̂₀ = ½                      r_t = gain_t · (x − x̂_{t−1})
    r_t ──conv/2──LSTM/2──LSTM/2──LSTM/2──┐
                   │ pool/4   │ pool/2    ├─ concat ─ 1×1 conv ─ sign ─► b_t ∈ {−1, 1}^M (per 16×16 block)
                   └──────────┴───────────┘   (multistage pooling)
    b_t ──1×1 conv──LSTM─↑2─LSTM─↑2─LSTM─↑2─LSTM─↑2──1×1 conv──► d_t;   x̂_t = x̂_{t−1} + d_t / gain_t

The encoder and decoder keep their LSTM states across iterations. The gates use the hard
sigmoid ``clamp(v/4 + 1/2, 0, 1)`` and the hard tanh ``clamp(v, −1, 1)``: piecewise-linear
steps that the exact decoder (:mod:`medvae.exact.progressive`) computes exactly, so its
pixels are the same on every machine. ``gain_t = 2^⌊t/2⌋`` keeps the shrinking residual
in the range the encoder learned (a power of two: exact to apply).

Entropy coding of the bits uses static tables (:class:`~medvae.models.rnn_conv.BitTables`),
one probability per iteration, channel and the same bit's value at the previous iteration,
counted on training images (:func:`fit_bit_tables`) and stored with the weights as integer CDFs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyModel
from compressai.models import CompressionModel
from torch import Tensor, nn

from medvae.models.registry import register_model

#: Precision of the bit tables' CDFs (CompressAI's rANS default).
TABLE_PRECISION = 16


def hard_sigmoid(v: Tensor) -> Tensor:
    """``clamp(v/4 + 1/2, 0, 1)``: the LSTM gates."""
    return (v * 0.25 + 0.5).clamp(0.0, 1.0)


def hard_tanh(v: Tensor) -> Tensor:
    return v.clamp(-1.0, 1.0)


def gain_shift(iteration: int) -> int:
    """``log2`` of the scale of the residual the encoder codes at ``iteration`` (0-based): ``⌊t/2⌋``."""
    return iteration // 2


def gain(iteration: int) -> int:
    """Scale of the residual the encoder codes at ``iteration``: ``2^⌊t/2⌋``."""
    return 2 ** gain_shift(iteration)


#: The decoder's LSTMs, in order; each is followed by a depth-to-space ×2.
DECODER_CELLS = ("dec_rnn1", "dec_rnn2", "dec_rnn3", "dec_rnn4")


class ConvLSTMCell(nn.Module):
    """An LSTM cell whose gates are convolutions of the input (``kernel``, ``stride``) and of
    the hidden state (1×1), with hard-sigmoid gates and hard-tanh activations."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.hidden_channels = hidden
        self.input = nn.Conv2d(in_channels, 4 * hidden, kernel, stride, kernel // 2)
        self.hidden = nn.Conv2d(hidden, 4 * hidden, 1, bias=False)
        with torch.no_grad():  # forget gate open at the start (Jozefowicz et al. 2015)
            self.input.bias[hidden : 2 * hidden].fill_(2.0)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        gates = self.input(x)
        if state is not None:
            gates = gates + self.hidden(state[0])
        i, f, o, g = gates.chunk(4, dim=1)
        c = hard_sigmoid(i) * hard_tanh(g)
        if state is not None:
            c = c + hard_sigmoid(f) * state[1]
        h = hard_sigmoid(o) * hard_tanh(c)
        return h, (h, c)


class BitTables(EntropyModel):
    """Integer CDF tables of the binary codes, in CompressAI's layout so its rANS coder reads them.

    The CDFs are saved with the weights and loaded as they are (never recomputed from the
    counts on loading), so every decoder codes with the encoder's integers.

    Table ``(t · M + c) · 2 + p`` codes bit ``c`` of iteration ``t`` given the same bit's
    value ``p`` at iteration ``t − 1`` (0 at the first iteration): symbols 0 (bit −1) and 1.
    """

    def __init__(self, iterations: int, channels: int):
        super().__init__()
        n = iterations * channels * 2
        self.iterations, self.channels = iterations, channels
        self.register_buffer("ones", torch.ones(n, dtype=torch.float64))  # counts of 1s (+1, Laplace)
        self.register_buffer("total", torch.full((n,), 2.0, dtype=torch.float64))
        self._offset = torch.zeros(n, dtype=torch.int32)
        self._cdf_length = torch.full((n,), 4, dtype=torch.int32)
        self._quantized_cdf = torch.zeros(n, 4, dtype=torch.int32)
        self.update()

    def update(self) -> None:
        """Integer CDFs from the counts (each symbol and the escape keep a nonzero frequency)."""
        from compressai._CXX import pmf_to_quantized_cdf

        p1 = (self.ones / self.total).tolist()
        self._quantized_cdf = torch.tensor(  # a buffer: saved and loaded with the weights
            [pmf_to_quantized_cdf([1.0 - p, p, 0.0], TABLE_PRECISION) for p in p1], dtype=torch.int32
        )


def table_indexes(iteration: int, channels: int, previous: Tensor | None) -> Tensor:
    """Table index of every bit of one iteration (``previous``: the bits of the iteration
    before, 0/1 int32 of shape (1, M, h, w), or None at the first)."""
    base = (iteration * channels + torch.arange(channels, dtype=torch.int32))[None, :, None, None] * 2
    return base if previous is None else base + previous.to(torch.int32)


@register_model("rnn-conv")
class RNNConv(CompressionModel):
    """Progressive ConvLSTM codec with multistage pooling and binary codes (module docstring).

    Args:
        N: channels of the widest LSTM (the others are N/2 and N/4).
        M: bits per 16×16 block per iteration.
        in_channels: image channels (1).
        iterations: the most iterations a file can have (the training unroll).
    """

    def __init__(self, N: int = 64, M: int = 64, in_channels: int = 1, iterations: int = 8):
        super().__init__()
        self.config = {"N": int(N), "M": int(M), "in_channels": int(in_channels), "iterations": int(iterations)}
        self.max_iterations, self.bits = int(iterations), int(M)
        q, h = N // 4, N // 2
        self.enc_conv = nn.Conv2d(in_channels, q, 3, 2, 1)
        self.enc_rnn1 = ConvLSTMCell(q, h, 3, 2)
        self.enc_rnn2 = ConvLSTMCell(h, N, 3, 2)
        self.enc_rnn3 = ConvLSTMCell(N, N, 3, 2)
        self.binarizer = nn.Conv2d(h + N + N, M, 1)  # multistage pooling: all three stages meet here
        self.dec_conv = nn.Conv2d(M, N, 1)
        self.dec_rnn1 = ConvLSTMCell(N, N, 3)
        self.dec_rnn2 = ConvLSTMCell(N // 4, N, 3)
        self.dec_rnn3 = ConvLSTMCell(N // 4, h, 3)
        self.dec_rnn4 = ConvLSTMCell(h // 4, q, 3)
        self.dec_out = nn.Conv2d(q // 4, in_channels, 1)
        self.bit_tables = BitTables(self.max_iterations, self.bits)

    @property
    def downsampling_factor(self) -> int:
        return 2**4

    # --- one iteration (the exact twin mirrors these, step for step) ----------------------
    def encode_step(self, r: Tensor, state: dict) -> Tensor:
        """The pre-binarization code of residual ``r`` (sign it to get the bits); updates ``state``."""
        e0 = self.enc_conv(r)
        h1, state["enc1"] = self.enc_rnn1(e0, state.get("enc1"))
        h2, state["enc2"] = self.enc_rnn2(h1, state.get("enc2"))
        h3, state["enc3"] = self.enc_rnn3(h2, state.get("enc3"))
        pooled = torch.cat([F.avg_pool2d(h1, 4), F.avg_pool2d(h2, 2), h3], dim=1)
        return self.binarizer(pooled)

    def decode_step(self, bits: Tensor, state: dict) -> Tensor:
        """The reconstruction increment (before dividing by the gain) from bits in {−1, 1}."""
        d = self.dec_conv(bits)
        for name in DECODER_CELLS:
            d, state[name] = getattr(self, name)(d, state.get(name))
            d = F.pixel_shuffle(d, 2)
        return self.dec_out(d)

    def binarize(self, code: Tensor) -> Tensor:
        """Bits in {−1, 1}: stochastic in training (unbiased, straight-through), the sign at coding."""
        t = torch.tanh(code)
        if self.training:
            b = torch.where(torch.rand_like(t) < (1 + t) / 2, 1.0, -1.0)
            return t + (b - t).detach()
        return torch.where(code >= 0, 1.0, -1.0).to(code.dtype)

    def forward(self, x: Tensor, iterations: int | None = None) -> dict[str, Any]:
        """Reconstructions after each iteration (``x_hat_steps``), the last as ``x_hat``.

        The loss weights iteration ``t``'s distortion by ``2^(t/2)``, normalized to mean 1
        (``step_weights``), so that later iterations, whose errors are smaller, still count.
        """
        iterations = self.max_iterations if iterations is None else iterations
        enc, dec = {}, {}
        x_hat = torch.full_like(x, 0.5)
        steps, bits = [], []
        for t in range(iterations):
            b = self.binarize(self.encode_step((x - x_hat) * gain(t), enc))
            x_hat = x_hat + self.decode_step(b, dec) / gain(t)
            steps.append(x_hat)
            bits.append(b)
        weights = torch.tensor([2.0 ** (t / 2) for t in range(iterations)], device=x.device)
        return {"x_hat": x_hat, "likelihoods": {}, "x_hat_steps": steps, "step_weights": weights / weights.mean(), "bits": bits}

    def aux_loss(self) -> Tensor:
        """No entropy bottleneck to train: the bit tables are counted after training."""
        return torch.zeros((), device=self.enc_conv.weight.device)


@torch.no_grad()
def fit_bit_tables(model: RNNConv, images: list[Tensor]) -> None:
    """Count each table's 1s over ``images`` ((1, 1, H, W) in [0, 1], multiples of 16) coded
    at the full iteration count, and rebuild the integer CDFs."""
    was_training = model.training
    model.eval()
    tables = model.bit_tables
    tables.ones.fill_(1.0)
    tables.total.fill_(2.0)
    for x in images:
        previous = None
        for t, b in enumerate(model(x.to(model.enc_conv.weight.device))["bits"]):
            ones = (b > 0).to(torch.int32).cpu()
            index = table_indexes(t, model.bits, previous).expand_as(ones).reshape(-1)
            tables.ones.index_add_(0, index, ones.reshape(-1).double())
            tables.total.index_add_(0, index, torch.ones(index.numel(), dtype=torch.float64))
            previous = ones
    tables.update()
    model.train(was_training)
