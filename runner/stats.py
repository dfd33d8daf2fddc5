"""Small, pure statistics for comparing two arms (see ARCHITECTURE.md, "How a verdict is made").

The unit of replication is the run. For each arm, stage and metric the statistic is taken in
each repeat (the p95 of that repeat's successful requests, its goodput over its measured window,
its success share); the arms are compared on the log scale with Welch's t on those per-repeat
estimates (Welch–Satterthwaite degrees of freedom). The ratio is exp(difference of mean logs)
and its 95% interval comes from the same t statistic: one estimator for the point and the
interval. The spread between repeats already contains each repeat's sampling noise, and small
numbers of repeats get the t distribution's wide tails. Shares get a floor on that spread from
each repeat's own binomial variance (Agresti–Coull), so 100% in every repeat is never certainty.

One repeat per arm supports a measurement, not a verdict: its interval is a block bootstrap
over 1-second blocks of that run ("within this run only")."""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BlockIds = NDArray[np.int32] | NDArray[np.int64]  # 1-second block numbers, from 0
# values per chunk of the passes over every request that would otherwise make temporaries of
# 8 bytes or more per request
_CHUNK = 1 << 20

MIN_REPEATS_FOR_VERDICT = 3
ALPHA = 0.05
BLOCK_DRAWS = 400
MIN_BLOCKS = 5
# relative width of the histogram buckets the within-run bootstrap resamples latencies in
BUCKET_WIDTH = 0.005


def percentile(sorted_values: FloatArray, q: float) -> float | None:
    """Nearest-rank percentile of an ascending array; None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    index = max(math.ceil(n * q), 1) - 1
    return float(sorted_values[min(index, n - 1)])


def improvement_ratio(baseline: float | None, candidate: float | None,
                      lower_is_better: bool) -> tuple[float | None, str | None]:
    """The ratio in the improvement direction (above 1 is better), or None with the reason."""
    if baseline is None or candidate is None:
        return None, "a value is missing"
    if not (math.isfinite(baseline) and math.isfinite(candidate)):
        return None, "a value is not a finite number"
    numerator, denominator = (baseline, candidate) if lower_is_better else (candidate, baseline)
    if denominator == 0:
        which = "candidate" if lower_is_better else "baseline"
        return None, f"the {which} value is zero, so no ratio exists"
    if numerator == 0:
        return 0.0, None
    return numerator / denominator, None


def geometric_mean(values: Sequence[float]) -> float | None:
    """The arm's value the ratio is made of: exp(mean log) of its per-repeat estimates."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    if any(v <= 0 for v in values):
        return 0.0 if all(v == 0 for v in values) else None
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float
    ci95: tuple[float, float] | None
    p_value: float | None  # two-sided, for "the ratio is 1"; None when no test is possible
    df: float | None
    method: str  # "welch-log" or "block-bootstrap-within-run"


def _t_quantile(q: float, df: float) -> float:
    from scipy.special import stdtrit  # scipy.special alone: far lighter than scipy.stats

    return float(stdtrit(df, q))


def _t_sf(x: float, df: float) -> float:
    from scipy.special import stdtr

    return float(stdtr(df, -x))


def welch_log_ratio(base: Sequence[float], cand: Sequence[float], lower_is_better: bool, *,
                    base_floor_var: float = 0.0, cand_floor_var: float = 0.0) -> RatioEstimate:
    """Welch's t on per-repeat log estimates; needs at least two positive values per arm.

    ``*_floor_var`` is a lower bound on the variance of one repeat's log estimate (from its
    own sampling noise), used when the repeats happen to agree more closely than that."""
    if len(base) < 2 or len(cand) < 2:
        raise ValueError("Welch's t needs at least two repeats per arm")
    log_b, log_c = np.log(np.asarray(base, dtype=float)), np.log(np.asarray(cand, dtype=float))
    diff = float(log_b.mean() - log_c.mean()) if lower_is_better \
        else float(log_c.mean() - log_b.mean())
    var_b = max(float(log_b.var(ddof=1)), base_floor_var) / len(log_b)
    var_c = max(float(log_c.var(ddof=1)), cand_floor_var) / len(log_c)
    se = math.sqrt(var_b + var_c)
    ratio = math.exp(diff)
    if se == 0.0:
        # identical repeats with no known sampling floor: no spread to build a test from
        return RatioEstimate(ratio, None, None, None, "welch-log")
    df = (var_b + var_c) ** 2 / (var_b ** 2 / (len(log_b) - 1) + var_c ** 2 / (len(log_c) - 1))
    half = _t_quantile(1 - ALPHA / 2, df) * se
    p_value = 2 * _t_sf(abs(diff) / se, df)
    return RatioEstimate(ratio, (math.exp(diff - half), math.exp(diff + half)), p_value, df,
                         "welch-log")


def repeats_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """A 95% interval of one arm's geometric mean of per-repeat estimates (t on the log
    values): the interval of the very point ``geometric_mean`` gives; needs two positive values."""
    if len(values) < 2 or any(v is None or not v > 0 for v in values):
        return None
    logs = np.log(np.asarray(values, dtype=float))
    half = _t_quantile(1 - ALPHA / 2, len(logs) - 1) * float(logs.std(ddof=1)) / math.sqrt(len(logs))
    centre = float(logs.mean())
    return math.exp(centre - half), math.exp(centre + half)


def log_share_variance(successes: int, total: int) -> float:
    """Sampling variance of log(share) for one repeat, from the Agresti–Coull-adjusted share
    (never zero, also at 0% or 100%)."""
    if total <= 0:
        return math.inf
    adjusted_n = total + 4
    p = (successes + 2) / adjusted_n
    return (1 - p) / (adjusted_n * p)


def wilson(successes: int, total: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score 95% interval of a share; not zero-width at 0% or 100%."""
    if total <= 0:
        return None
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (family-wise error), None passed through."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(ci95: tuple[float, float] | None) -> str:
    if ci95 is None:
        return "not comparable"
    if ci95[0] > 1.0:
        return "improved"
    if ci95[1] < 1.0:
        return "regressed"
    return "no significant change"


# --- within one run: block bootstrap over 1-second blocks -------------------------------------

@dataclass(frozen=True)
class Blocks:
    """One arm's requests of one stage, cut into 1-second blocks for the within-run bootstrap:
    per block, its requests and successes, and each successful latency's block."""

    requests: IntArray
    successes: IntArray
    ok_ms: FloatArray  # successful latencies, any order
    ok_block: BlockIds  # the block of each successful latency
    duration_s: float
    # nearest-rank quantiles of ok_ms already known (the stage's figures), by q
    quantiles: dict[float, float] = field(default_factory=dict, compare=False)
    # the histogram bucket of each successful latency (bucket_of(ok_ms)) when already known
    ok_bucket: NDArray[np.int32] | None = field(default=None, compare=False, repr=False)

    @property
    def count(self) -> int:
        return len(self.requests)


def _block_weights(blocks: int, draws: int, rng: np.random.Generator) -> FloatArray:
    ahead = _take_ahead(rng, blocks, draws)
    counts = ahead if ahead is not None else _draw_counts(blocks, draws, rng)
    return counts.astype(float)


_Counts = NDArray[np.int64] | NDArray[np.uint16]  # multinomial draws: blocks drawn per block


def _draw_counts(blocks: int, draws: int, rng: np.random.Generator) -> _Counts:
    return rng.multinomial(blocks, np.full(blocks, 1.0 / blocks), size=draws)


# --- block weights drawn ahead, in a second thread ---------------------------------------------
# The weights are most of a within-run bootstrap's time, and numpy draws them without holding
# the GIL. A generator's draws follow from its state alone, so the draws a comparison will ask
# for can be made ahead on a copy of that state while the comparison computes, and handed over
# with the state they leave: the very draws, in the very order, the generator would have made.

def _frozen(value: object) -> object:
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in sorted(value.items()))
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    return value


def _state_key(rng: np.random.Generator) -> object:
    """The whole state of a generator, hashable: equal keys, equal draws."""
    return _frozen(rng.bit_generator.state)


class DrawnAhead:
    """Block weights drawn in a background thread: for each (generator, block counts) of
    ``plan``, in order, the weights ``_block_weights`` would draw for those counts one after
    another from the generator's state now. ``_block_weights`` takes a set when its generator
    is in the state the set was drawn from (waiting for it while it is being drawn), else draws
    itself: a plan that guessed wrong costs time, never a different draw.

    ``start`` begins the thread, unless an active one already makes the same draws (then that
    one serves) or a new one supersedes active ones begun from the same generator state (then
    those stop). ``stop`` ends the thread after the draw in hand and drops what was not taken;
    a thread nobody stops ends after its plan, and its draws go with the object."""

    def __init__(self, plan: Sequence[tuple[np.random.Generator, Sequence[int]]],
                 draws: int = BLOCK_DRAWS) -> None:
        self._draws = draws
        # copies of the generators' states, taken now, before the caller draws from them
        copies = []
        for rng, counts in plan:
            copy = np.random.Generator(type(rng.bit_generator)())
            copy.bit_generator.state = rng.bit_generator.state
            copies.append((copy, list(counts)))
        self._items = [(rng, blocks) for rng, counts in copies for blocks in counts]
        self._origins = {_state_key(rng) for rng, _ in copies}
        self._signature = (draws, tuple((_state_key(rng), tuple(c)) for rng, c in copies))
        self._ready: dict[tuple[object, int, int], tuple[_Counts, Mapping[str, Any]]] = {}
        # the set being drawn now: a caller asking for it waits instead of drawing it too
        self._drawing = self._key(0)
        self._cancelled = False
        self._serving: DrawnAhead | None = None  # the active one making the same draws
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="block-weights", daemon=True)

    def _key(self, item: int) -> tuple[object, int, int] | None:
        if item >= len(self._items):
            return None
        rng, blocks = self._items[item]
        return (_state_key(rng), blocks, self._draws)

    def start(self) -> DrawnAhead:
        if not self._items:
            return self
        for other in list(_AHEAD):
            if other._cancelled:
                continue
            if other._signature == self._signature:
                self._serving = other
                return other
            if other._origins & self._origins:
                other._cancel()  # its thread ends after the draw in hand
        _AHEAD.add(self)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for item, (rng, blocks) in enumerate(self._items):
                with self._done:
                    key = self._drawing
                    if self._cancelled or key is None:
                        return
                counts = _draw_counts(blocks, self._draws, rng)
                if counts.max(initial=0) <= np.iinfo(np.uint16).max:  # kept small: the same
                    counts = counts.astype(np.uint16)  # weights once converted to float
                with self._done:
                    if not self._cancelled:
                        self._ready[key] = (counts, rng.bit_generator.state)
                    self._drawing = self._key(item + 1)
                    self._done.notify_all()
        finally:
            with self._done:
                self._drawing = None
                self._done.notify_all()

    def take(self, rng: np.random.Generator, blocks: int, draws: int) -> _Counts | None:
        key: tuple[object, int, int] = (_state_key(rng), blocks, draws)
        with self._done:
            while key not in self._ready and self._drawing == key:
                self._done.wait()
            found = self._ready.pop(key, None)
        if found is None:
            return None
        counts, state = found
        rng.bit_generator.state = state
        return counts

    def _cancel(self) -> None:
        with self._done:
            self._cancelled = True
            self._ready.clear()
        _AHEAD.discard(self)

    def stop(self) -> None:
        if self._serving is not None:
            self._serving.stop()
        self._cancel()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> DrawnAhead:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# the active ones; weakly held, so the draws of one nobody stopped go with it
_AHEAD: weakref.WeakSet[DrawnAhead] = weakref.WeakSet()


def _take_ahead(rng: np.random.Generator, blocks: int, draws: int) -> _Counts | None:
    for ahead in list(_AHEAD):
        counts = ahead.take(rng, blocks, draws)
        if counts is not None:
            return counts
    return None


# fixed log-spaced latency buckets (0.001 ms to 1,000 s): an arm's histogram is built once and
# kept, whatever it is compared with
_LOW_MS, _HIGH_MS = 1e-3, 1e6
_EDGES = np.asarray(_LOW_MS * (1 + BUCKET_WIDTH) ** np.arange(
    int(math.ceil(math.log(_HIGH_MS / _LOW_MS) / math.log1p(BUCKET_WIDTH))) + 2), dtype=np.float64)
_UPPER_EDGES = _EDGES[1:]  # each bucket's upper edge, by bucket
_HISTOGRAMS: dict[int, tuple[Blocks, IntArray, FloatArray, dict[float, float]]] = {}


def bucket_of(ms: FloatArray) -> NDArray[np.int32]:
    """The bucket of each latency, as ``searchsorted(_EDGES, ms, "right") - 1`` clipped to the
    buckets finds it, in linear time: a single-precision log puts a value in its bucket or
    next to it, and the few a bucket's edges disagree with (NaN and infinities among them)
    are looked up exactly. Few passes, small temporaries (chunk by chunk): at 10 M requests
    the first touch of every new array's memory is a good part of the cost."""
    if len(ms) <= _CHUNK:
        return _bucket_chunk(ms)
    bucket = np.empty(len(ms), dtype=np.int32)
    for start in range(0, len(ms), _CHUNK):
        bucket[start:start + _CHUNK] = _bucket_chunk(ms[start:start + _CHUNK])
    return bucket


def _bucket_chunk(ms: FloatArray) -> NDArray[np.int32]:
    last = len(_EDGES) - 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        guess = np.log(ms.astype(np.float32))
        guess -= np.float32(math.log(_LOW_MS))
        guess *= np.float32(1 / math.log1p(BUCKET_WIDTH))
        np.clip(guess, 0, last, out=guess)  # infinities to the ends; NaN stays NaN
        bucket = guess.astype(np.int32)  # floor, the guess being >= 0; NaN: fixed below
    del guess
    np.clip(bucket, 0, last, out=bucket)
    wrong = ms < _EDGES[bucket]
    wrong &= bucket > 0
    above = ms >= _UPPER_EDGES[bucket]
    above &= bucket < last
    wrong |= above
    del above
    wrong |= np.isnan(ms)
    exact = np.searchsorted(_EDGES, ms[wrong], side="right") - 1
    bucket[wrong] = np.clip(exact, 0, last)
    return bucket


_bucket_of = bucket_of
_BUCKETS = len(_EDGES) - 1


def count_ids(ids: BlockIds, length: int) -> IntArray:
    """``np.bincount(ids, minlength=length)`` of non-negative ids below ``length``, in chunks:
    np.bincount first converts its input to 64-bit integers, a temporary of 8 bytes each."""
    counts = np.zeros(length, dtype=np.int64)
    for start in range(0, len(ids), _CHUNK):
        counts += np.bincount(ids[start:start + _CHUNK], minlength=length)
    return counts


def block_sums(ids: BlockIds, values: FloatArray, length: int) -> FloatArray:
    """``np.bincount(ids, weights=values, minlength=length)``, the same sums bit for bit (each
    id's values added one by one in their order, from 0.0) in chunks, without its 64-bit copy
    of the ids."""
    sums = np.zeros(length, dtype=np.float64)
    for start in range(0, len(ids), _CHUNK):
        np.add.at(sums, ids[start:start + _CHUNK], values[start:start + _CHUNK])
    return sums


def bucket_counts(buckets: NDArray[np.int32]) -> IntArray:
    """How many values each bucket holds."""
    return count_ids(buckets, _BUCKETS)


def nearest_ranks(values: FloatArray, ranks: Sequence[int],
                  buckets: NDArray[np.int32] | None = None,
                  counts: IntArray | None = None) -> list[float]:
    """The values at 0-based ``ranks`` of ``values`` in ascending order (NaN last, as np.sort
    and np.partition put it), exactly, without a partial sort of a copy of every value: the
    buckets are monotone in the value (``bucket_of``; NaN in the last), so the bucket counts
    tell which bucket holds each rank, and only that bucket's values are partially sorted.
    ``buckets`` (``bucket_of(values)``) and ``counts`` (``bucket_counts(buckets)``) are made
    when not given."""
    if buckets is None:
        buckets = bucket_of(values)
    if counts is None:
        counts = bucket_counts(buckets)
    wanted = np.asarray(ranks, dtype=np.int64)
    if len(wanted) and (wanted.min() < 0 or wanted.max() >= len(values)):
        raise IndexError(f"ranks {list(ranks)} outside 0..{len(values) - 1}")
    ends = np.cumsum(counts)
    holder = np.searchsorted(ends, wanted, side="right")  # the first bucket ending past it
    offset = wanted - (ends[holder] - counts[holder])  # the rank among its bucket's values
    chosen = np.zeros(_BUCKETS, dtype=bool)
    chosen[holder] = True
    rows = chosen[buckets]
    if rows.all():  # every value is in the buckets wanted: no smaller copy to make
        part_values, part_buckets = values, buckets
    else:
        part_values, part_buckets = values[rows], buckets[rows]
    del rows
    found = [0.0] * len(wanted)
    holders = np.unique(holder)
    for bucket in holders:
        which = np.flatnonzero(holder == bucket)
        inside = part_values if len(holders) == 1 else part_values[part_buckets == bucket]
        placed = np.partition(inside, np.unique(offset[which]))
        for i in which:
            found[i] = float(placed[offset[i]])
    return found


def _column_counts(b: Blocks, buckets: NDArray[np.int32], column: IntArray,
                   width: int) -> IntArray:
    """Each (block, used bucket) pair's count of latencies, flat (block-major), in chunks of
    latencies: in time order a chunk touches few blocks, so only that range is counted."""
    flat = np.zeros(b.count * width, dtype=np.int64)
    for start in range(0, len(buckets), _CHUNK):
        key = b.ok_block[start:start + _CHUNK].astype(np.int64)
        key *= width
        key += column[buckets[start:start + _CHUNK]]
        low = int(key.min())
        key -= low
        counted = np.bincount(key)
        flat[low:low + len(counted)] += counted
    return flat


def _cached(b: Blocks) -> tuple[IntArray, FloatArray, dict[float, float]]:
    """(the buckets this arm uses, its blocks x those buckets running counts -- each block's
    count of latencies up to and including the bucket --, its exact quantiles by q), built
    once per arm."""
    cached = _HISTOGRAMS.get(id(b))
    if cached is not None and cached[0] is b:
        return cached[1], cached[2], cached[3]
    buckets = b.ok_bucket if b.ok_bucket is not None else bucket_of(b.ok_ms)
    present = bucket_counts(buckets) > 0
    used = np.flatnonzero(present).astype(np.int64)
    # the bucket's column among those used
    flat = _column_counts(b, buckets, np.cumsum(present) - 1, len(used))
    del buckets
    running = np.cumsum(flat.reshape(b.count, len(used)), axis=1).astype(np.float64)
    if len(_HISTOGRAMS) > 64:
        _HISTOGRAMS.clear()
    _HISTOGRAMS[id(b)] = (b, used, running, {})
    return used, running, _HISTOGRAMS[id(b)][3]


def _histogram(b: Blocks) -> tuple[IntArray, FloatArray]:
    """(the buckets the arm uses, its blocks x buckets running counts)."""
    used, running, _ = _cached(b)
    return used, running


def _exact_quantile(b: Blocks, q: float) -> float:
    """The nearest-rank quantile of the arm's successful latencies; the three the comparison
    asks for are found together (``nearest_ranks``) and kept."""
    _, _, exact = _cached(b)
    if q in b.quantiles:
        return b.quantiles[q]
    if q not in exact:
        n = len(b.ok_ms)
        wanted = sorted({q, *_BLOCK_QUANTILES})
        ranks = [max(math.ceil(n * w), 1) - 1 for w in wanted]
        found = nearest_ranks(b.ok_ms, ranks, b.ok_bucket)
        exact.update(dict(zip(wanted, found, strict=True)))
    return exact[q]


_BLOCK_QUANTILES = (0.5, 0.95, 0.99)


def _quantile_draws(b: Blocks, weights: FloatArray, q: float) -> FloatArray:
    """Quantile of each resample, from the arm's per-block histogram (exact to the bucket):
    the first bucket where the resample's running count reaches its nearest rank. A resample's
    running counts are its block weights times the blocks' running counts; only the columns
    around the sample's own quantile are multiplied out, widened until every resample's
    bucket lies inside (the counts are whole numbers, so every sum is exact in any order)."""
    used, running = _histogram(b)
    last = len(used) - 1
    whole = running.sum(axis=0)  # the sample itself: every block once
    drawn_totals = weights @ running[:, -1]
    targets = np.ceil(drawn_totals * q)
    # the sample's bucketed quantile against the exact one corrects the draws for the
    # bucket's width, so the interval is centred where it belongs
    centre = min(int(np.searchsorted(whole, math.ceil(whole[-1] * q), side="left")), last)
    lo, hi = max(centre - 16, 0), min(centre + 17, last + 1)
    while True:
        part = weights @ running[:, lo:hi]  # draws x (hi - lo) running counts
        left = lo > 0 and bool((part[:, 0] >= targets).any())
        right = hi <= last and bool((part[:, -1] < targets).any())
        if not (left or right):
            break
        width = hi - lo
        lo = max(lo - 2 * width, 0) if left else lo
        hi = min(hi + 2 * width, last + 1) if right else hi
    index = np.minimum(lo + (part < targets[:, None]).sum(axis=1), last)
    bucket = used[np.concatenate([[centre], index])]
    bucketed = np.sqrt(_EDGES[bucket] * _EDGES[bucket + 1])
    exact = _exact_quantile(b, q)
    return np.asarray(bucketed[1:] * (exact / bucketed[0]), dtype=np.float64)


def block_bootstrap_ratio(base: Blocks, cand: Blocks, metric: str, lower_is_better: bool,
                          point: float, rng: np.random.Generator,
                          draws: int = BLOCK_DRAWS) -> RatioEstimate:
    """A 95% percentile interval from resampling each run's 1-second blocks. It describes the
    variation within these runs only, never run-to-run variation, so it supports no verdict.
    ``metric`` is a quantile ("q0.95"), "mean" (successful latencies), "throughput", "goodput"
    or "success"."""
    if base.count < MIN_BLOCKS or cand.count < MIN_BLOCKS:
        # a handful of seconds cannot show how a run varies over its time
        return RatioEstimate(point, None, None, None, "block-bootstrap-within-run")
    w_base = _block_weights(base.count, draws, rng)
    w_cand = _block_weights(cand.count, draws, rng)
    if metric.startswith("q"):
        q = float(metric[1:])
        if len(base.ok_ms) == 0 or len(cand.ok_ms) == 0:
            return RatioEstimate(point, None, None, None, "block-bootstrap-within-run")
        b_draws = _quantile_draws(base, w_base, q)
        c_draws = _quantile_draws(cand, w_cand, q)
    elif metric == "mean":  # mean latency of successful answers: sums and counts per block
        if len(base.ok_ms) == 0 or len(cand.ok_ms) == 0:
            return RatioEstimate(point, None, None, None, "block-bootstrap-within-run")
        # (arm.successes is each block's count of successful latencies)
        b_draws, c_draws = ((w @ block_sums(arm.ok_block, arm.ok_ms, arm.count))
                            / np.maximum(w @ arm.successes, 1)
                            for w, arm in ((w_base, base), (w_cand, cand)))
    elif metric in ("throughput", "goodput"):
        attr = "requests" if metric == "throughput" else "successes"
        b_draws = w_base @ getattr(base, attr).astype(float) / base.duration_s
        c_draws = w_cand @ getattr(cand, attr).astype(float) / cand.duration_s
    elif metric == "success":
        # each resample's share drawn from its Jeffreys posterior: never a zero-width interval
        # at 0% or 100%, where every block agrees
        b_draws, c_draws = (rng.beta(w @ arm.successes.astype(float) + 0.5,
                                     w @ (arm.requests - arm.successes).astype(float) + 0.5)
                            for w, arm in ((w_base, base), (w_cand, cand)))
    else:
        raise ValueError(metric)
    num, den = (b_draws, c_draws) if lower_is_better else (c_draws, b_draws)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num / den
    finite = ratios[np.isfinite(ratios)]
    if len(finite) < 0.95 * len(ratios) or len(finite) == 0:
        return RatioEstimate(point, None, None, None, "block-bootstrap-within-run")
    low_ci, high_ci = np.percentile(finite, [2.5, 97.5])
    return RatioEstimate(point, (float(low_ci), float(high_ci)), None, None,
                         "block-bootstrap-within-run")
