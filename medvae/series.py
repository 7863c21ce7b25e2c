"""Series coding's plan: which slices of a volume are coded alone, and which neighbour each other one follows.

Lossless and near-lossless coding of a series (:meth:`medvae.Codec.compress_series`, ``medvae
compress --series``) codes each slice given a neighbour, except key slices, which are coded alone.
A key slice sits in the middle of each run of ``2·max_chain + 1`` slices: the slices after it are
coded forward, each given the one before, and the slices before it backward, each given the one
after (neighbouring slices share as much either way). So a viewer decodes any slice after at most
``max_chain`` others (:data:`CHAIN`, 7, by default) with one key slice per 15, where a key slice
at the start of each run would need one per 8. A slice that cannot follow its neighbour (another
shape or dtype) starts a run of its own.

Decoding needs no plan: each file records the pixel CRCs of the slices it was coded given, so a
decoder finds them among the decoded slices (:meth:`medvae.Codec.decompress_series`, ``medvae
decompress``), whichever way the series was coded.

Why finding slices by CRC cannot decode a wrong image silently: slices with equal pixels have
equal CRCs, so any of them is the slice the encoder read; slices whose pixels differ but whose
CRC-32 agree (a chance of 2^-32 a pair) would feed the residual model other inputs, and the file's
own pixel CRC, checked after every decode, then fails (but for another 2^-32 chance) with
:class:`BitstreamError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Sequence

import numpy as np

from medvae import bitstream
from medvae.errors import InputError

#: :meth:`medvae.Codec.compress_series` and ``--series`` code so that a slice decodes after at most 7 others.
CHAIN = 7
#: Longest chain of files, each coded given a neighbour, that ``medvae decompress`` follows back
#: to a key slice (a longer one is refused as forged), so ``medvae compress --max-chain`` goes up to it.
MAX_CHAIN = 4096
#: The most previous slices a series residual model reads (:attr:`medvae.residual.model.ResidualModel.previous`).
MAX_PREVIOUS = 2

#: One step of a plan: (slice, the slice it is coded given; None for a key slice, coded alone).
Step = tuple[int, int | None]


def coding_plan(count: int, max_chain: int = CHAIN, follows: Sequence[bool] | None = None) -> list[Step]:
    """The order in which a series of ``count`` slices is coded: each slice with the neighbour it
    is coded given, always coded before it (None for a key slice). Key slices sit in the middle
    of runs of ``2·max_chain + 1`` slices (the last run may be shorter), the run's slices before
    the key coded backward from it, those after it forward; so no slice is more than
    ``max_chain`` steps from its key slice (0: every slice alone). ``follows[i]`` (default: all
    true) says whether slice ``i`` may be coded given slice ``i − 1`` and the other way round (same
    shape and dtype); where it may not, a new run starts."""
    if isinstance(max_chain, bool) or not isinstance(max_chain, (int, np.integer)) or not 0 <= max_chain <= MAX_CHAIN:
        raise InputError(f"max_chain must be a whole number from 0 (every slice alone) to {MAX_CHAIN}, got {max_chain!r}")
    starts = [i for i in range(count) if i == 0 or (follows is not None and not follows[i])] + [count]
    plan: list[Step] = []
    for first, end in zip(starts, starts[1:]):  # slices that may follow one another
        for start in range(first, end, 2 * max_chain + 1):
            stop = min(start + 2 * max_chain + 1, end)
            key = (start + stop - 1) // 2
            plan.append((key, None))
            plan += [(i, i + 1) for i in range(key - 1, start - 1, -1)]
            plan += [(i, i - 1) for i in range(key + 1, stop)]
    return plan


def runs(plan: Sequence[Step]) -> dict[int, int]:
    """Each slice's run in ``plan`` (:func:`coding_plan`): the runs' slices read only one another,
    so each run may be coded in a process of its own."""
    run, of = -1, {}
    for k, reference in plan:
        run += reference is None
        of[k] = run
    return of


def read_by_those_to_code(plan: Sequence[Step], kept: Collection[int]) -> set[int]:
    """The slices of ``plan`` a series coding has to handle when the files of the slices ``kept``
    exist (an interrupted run's): every other slice, to code, and each kept one that a slice to
    code reads, directly or through other kept ones, to decode (the rest are left as they are)."""
    reference_of = dict(plan)
    wanted = {k for k, _ in plan if k not in kept}
    for k in list(wanted):
        reference = reference_of[k]
        while reference is not None and reference in kept and reference not in wanted:
            wanted.add(reference)
            reference = reference_of[reference]
    return wanted


#: How many quarters coarser than the encoder's rule :meth:`medvae.Codec.compress_series` also
#: quantizes the base latent of each chain's first slice (``coarser_step``), keeping the smaller
#: file; the rest of the chain keeps the choice (:class:`StepSearch`).
CHAIN_TRIAL = 2


class StepSearch:
    """The step of y each slice of a plan is coded with: the first slice of each chain (the slice
    coded given a key slice) is coded twice, with the rule's step (``coarser_step`` 0) and
    :data:`CHAIN_TRIAL` quarters coarser, and the smaller file kept; the later slices of the chain
    take its choice; key slices, coded alone, the rule's. Without ``search``, every slice the rule's.

    Why: the rule (:func:`medvae.prediction.base_step`) was fitted on mean sizes, and which step
    codes a series smallest varies from series to series (two quarters coarser saves 0.4 % on the
    CT test series at τ = 1 and costs 0.5 % on training slabs; docs/lossless.md, "The encoder's step
    search"), while it holds along a series: so the encoder measures it on each chain's first slice.
    The choice is the encoder's alone: each file records its step, so decoding needs nothing new,
    and it rests on the files' sizes, so the same images choose the same steps on every machine."""

    def __init__(self, plan: Sequence[Step], search: bool = True):
        self._reference = dict(plan)
        self._search = search
        self._chosen: dict[int, int] = {}  # slice: its coarser_step
        self._offered: dict[int, dict[int, object]] = {}

    def candidates(self, k: int) -> tuple[int, ...]:
        """The ``coarser_step`` values slice ``k`` is coded with, the rule's (0) first."""
        reference = self._reference[k]
        if reference is None:
            return (0,)
        if self._reference[reference] is None:  # the first slice of a chain
            return (0, CHAIN_TRIAL) if self._search else (0,)
        return (self._chosen[reference],)

    def ready(self, k: int) -> bool:
        """Whether slice ``k``'s candidates are known: a key slice's and a chain's first slice's
        always, a later slice's once the slice it follows has its choice."""
        reference = self._reference[k]
        return reference is None or self._reference[reference] is None or reference in self._chosen

    def adopt(self, k: int, coarser_step: int) -> None:
        """Take ``coarser_step`` as slice ``k``'s choice, made elsewhere: 0 for a slice coded alone
        for want of its neighbour, or what a file written before says (:func:`choice_of`)."""
        self._chosen[k] = coarser_step

    def offer(self, k: int, coarser_step: int, result: tuple[bytes, np.ndarray]) -> tuple[bytes, np.ndarray] | None:
        """Slice ``k`` coded with ``coarser_step`` gave ``result`` (file, pixels): the chosen
        result once every candidate has been offered (the smallest file; the earlier candidate
        on a tie), else None."""
        offered = self._offered.setdefault(k, {})
        offered[coarser_step] = result
        candidates = self.candidates(k)
        if len(offered) < len(candidates):
            return None
        del self._offered[k]
        self._chosen[k] = min(candidates, key=lambda c: len(offered[c][0]))
        return offered[self._chosen[k]]


def choice_of(step: int, rule: int) -> int:
    """The choice (``coarser_step``) of a slice the step search coded, from the step its file
    records and the rule's step for that slice (:meth:`medvae.Codec.rule_step`): its candidates were
    0 and :data:`CHAIN_TRIAL`. At the largest step, where the two meet, the rule's."""
    return 0 if step <= rule else CHAIN_TRIAL


def slice_key(crc: int, header: bitstream.Header) -> tuple:
    """How decoders find a slice a file was coded given: its pixel CRC, with the shape and dtype
    of that file (a slice follows only one of its own shape and dtype), so that blank slices of
    another dtype, whose bytes and CRC are the same, are not taken for it."""
    return crc, tuple(header.shape), np.dtype(header.dtype).str


def slices_wanted(header: bitstream.Header) -> list[tuple]:
    """The :func:`slice_key` of each slice a file was coded given, nearest first (none for a key slice)."""
    return [slice_key(crc, header) for crc in (header.previous_crc, header.earlier_crc) if crc is not None]


def can_follow(image: np.ndarray, neighbour: np.ndarray) -> bool:
    """Whether a slice may be coded given ``neighbour``: the same shape and dtype."""
    return np.shape(image) == np.shape(neighbour) and np.asarray(image).dtype == np.asarray(neighbour).dtype


class Neighbours:
    """What each slice of a series passes to the slices coded given it (:func:`read_next`: its
    decoded pixels, then those it read), kept until the last of them is coded, so a long series
    holds a few slices, not all. Slices are named by any hashable key; ``plan`` is (slice,
    reference) pairs, as :func:`coding_plan` gives them."""

    def __init__(self, plan: Sequence[tuple[Hashable, Hashable | None]]):
        self._waiting = Counter(reference for _, reference in plan if reference is not None)
        self._kept: dict[Hashable, list[np.ndarray]] = {}

    def given(self, reference: Hashable | None) -> list[np.ndarray] | None:
        """The slices a slice coded given ``reference`` reads, nearest first; None for a key slice,
        or when ``reference`` was not coded (a failed or skipped slice: code this one alone)."""
        return None if reference is None else self._kept.get(reference)

    def coded(self, slice_key: Hashable, reference: Hashable | None, pixels: np.ndarray, read: list[np.ndarray] | None,
              data: bytes) -> None:
        """Slice ``slice_key``, planned given ``reference``, was coded given ``read`` into ``data``,
        which decodes to ``pixels``."""
        if reference is not None and reference in self._waiting:
            self._waiting[reference] -= 1
            if not self._waiting[reference]:
                del self._waiting[reference]
                self._kept.pop(reference, None)
        if slice_key in self._waiting:
            self._kept[slice_key] = read_next(pixels, read, data)


def previous_planes(before: list[np.ndarray], count: int) -> np.ndarray:
    """The ``count`` previous slices a series model reads, as one (count, H, W) array, nearest
    first, from the decoded slices ``before`` (nearest first, at least one): where the series
    holds fewer since its key slice (the slice right after it has one), the farthest is repeated,
    so every decoder builds the same planes from the same decoded slices."""
    if not before:
        raise InputError("a slice coded given its series needs at least the slice before it")
    chosen = list(before[:count]) + [before[min(len(before), count) - 1]] * max(0, count - len(before))
    return np.stack(chosen)


def as_slices(previous) -> list[np.ndarray] | None:
    """``previous`` as :meth:`medvae.Codec.compress` and ``decompress`` take it: None, one slice
    (a 2-D array), or the slices before this one, nearest first (a sequence of 2-D arrays, or a
    3-D array), as a list of 2-D arrays (None for None)."""
    if previous is None:
        return None
    if isinstance(previous, (list, tuple)) and all(isinstance(p, np.ndarray) for p in previous):
        slices = list(previous)
    else:
        array = np.asarray(previous)
        slices = [array] if array.ndim == 2 else list(array) if array.ndim == 3 else []
    if not slices or any(s.ndim != 2 for s in slices):
        raise InputError("previous= takes the slice before this one (2-D), or the slices before it, nearest first")
    return slices


def read_next(pixels: np.ndarray, offered: list[np.ndarray] | None, data: bytes) -> list[np.ndarray]:
    """The slices the next slice of a series is coded given, nearest first: this slice's decoded
    ``pixels``, then those its file ``data`` was coded given (``offered``, None for a key slice;
    none if the file records no previous slice: a lossy rate-control choice reads none, and a
    decoder's chain stops at it), at most :data:`MAX_PREVIOUS`. What
    :meth:`medvae.Codec.compress_series` and ``medvae compress --series`` pass along."""
    read = offered if offered is not None and bitstream.read_header(data).previous_crc is not None else None
    return [pixels, *(read or [])][:MAX_PREVIOUS]
