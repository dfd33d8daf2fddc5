"""The faster figures of `loadproof compare` are the figures it gave before: exact nearest
ranks from the histogram buckets instead of partial sorts of copies, the bootstrap's buckets
made once and handed over, and passes over every request done in chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from loadproof import stats
from loadproof.metrics import Latency, stage_metrics
from loadproof.store import load_run

from .conftest import SAMPLE


def _edge_values(rng: np.random.Generator) -> np.ndarray:
    edges = stats._EDGES
    picked = edges[rng.integers(0, len(edges), 300)]
    return np.concatenate([picked, np.nextafter(picked, 0), np.nextafter(picked, np.inf),
                           [0.0, 0.0, -1.0, -np.inf, 1e-9, 1e7, 1e300, np.inf, np.inf]])


def _sample(rng: np.random.Generator, n: int, *, edges: bool, nan: bool) -> np.ndarray:
    values = np.round(rng.lognormal(3, 1.5, n), 1)  # rounding makes ties, as k6's ms do
    parts = [values, _edge_values(rng)] if edges else [values]
    if nan:
        parts.append(np.full(5, np.nan))
    mixed = np.concatenate(parts)
    rng.shuffle(mixed)
    return mixed


def _by_sorting(values: np.ndarray, ranks: list[int]) -> list[float]:
    ordered = np.sort(values)  # NaN last, as np.partition puts it
    return [float(ordered[r]) for r in ranks]


def _same(a: list[float], b: list[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed,n", [(0, 1), (1, 2), (2, 9), (3, 1000), (4, 50_001)])
@pytest.mark.parametrize("edges,nan", [(False, False), (True, False), (True, True)])
def test_nearest_ranks_from_buckets_are_those_of_a_sort(seed: int, n: int, edges: bool,
                                                        nan: bool) -> None:
    rng = np.random.default_rng(seed)
    values = _sample(rng, n, edges=edges, nan=nan)
    m = len(values)
    ranks = sorted({0, m - 1, *(min(max(math.ceil(m * q), 1) - 1, m - 1)
                                for q in (0.5, 0.9, 0.95, 0.99)),
                    *rng.integers(0, m, 20).tolist()})
    assert _same(stats.nearest_ranks(values, ranks), _by_sorting(values, ranks))
    shuffled = list(reversed(ranks))  # any order, repeats allowed
    assert _same(stats.nearest_ranks(values, shuffled + shuffled[:2]),
                 _by_sorting(values, shuffled + shuffled[:2]))


def test_nearest_ranks_when_every_value_is_in_one_bucket() -> None:
    values = np.array([5.0, 5.0, 5.0, 5.001, 5.0, 4.999])
    ranks = list(range(len(values)))
    assert _same(stats.nearest_ranks(values, ranks), _by_sorting(values, ranks))
    with pytest.raises(IndexError):
        stats.nearest_ranks(values, [len(values)])


@pytest.mark.parametrize("seed", [0, 1])
def test_latency_figures_are_those_of_the_former_partial_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = _sample(rng, 20_000, edges=True, nan=False)
    n = len(values)
    ranks = {q: min(max(math.ceil(n * q), 1) - 1, n - 1) for q in (0.50, 0.90, 0.95, 0.99)}
    placed = np.partition(values, sorted({*ranks.values(), n - 1}))  # the former way
    former = Latency(float(placed[ranks[0.50]]), float(placed[ranks[0.90]]),
                     float(placed[ranks[0.95]]), float(placed[ranks[0.99]]),
                     float(placed[n - 1]), n)
    assert Latency.of_values(values) == former
    assert Latency.of_values(values, stats.bucket_of(values)) == former
    assert Latency.of_values(values) == Latency.of(np.sort(values))


def test_buckets_and_counts_in_chunks_are_those_in_one_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    values = _sample(rng, 5_000, edges=True, nan=True)
    whole = stats.bucket_of(values)
    expected = np.clip(np.searchsorted(stats._EDGES, values, side="right") - 1, 0,
                       len(stats._EDGES) - 2)
    assert np.array_equal(whole, expected)
    monkeypatch.setattr(stats, "_CHUNK", 777)
    assert np.array_equal(stats.bucket_of(values), whole)
    assert np.array_equal(stats.bucket_counts(whole),
                          np.bincount(whole, minlength=len(stats._EDGES) - 1))


def _former_running(b: stats.Blocks) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap's histogram as it was made: one bincount over every latency's key."""
    buckets = stats.bucket_of(b.ok_ms)
    present = np.bincount(buckets, minlength=len(stats._EDGES) - 1) > 0
    used = np.flatnonzero(present).astype(np.int64)
    key = b.ok_block.astype(np.int64) * len(used) + (np.cumsum(present) - 1)[buckets]
    flat = np.bincount(key, minlength=b.count * len(used))
    return used, np.cumsum(flat.reshape(b.count, len(used)), axis=1).astype(np.float64)


@pytest.mark.parametrize("ordered", [True, False])
def test_histogram_in_chunks_is_the_former_histogram(ordered: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    blocks = 60
    block = np.repeat(np.arange(blocks, dtype=np.int32), 400)
    ms = rng.lognormal(3, 1, len(block)) * np.exp(np.linspace(0, 3, blocks))[block]
    if not ordered:  # requests need not be stored in time order
        order = rng.permutation(len(block))
        block, ms = block[order], ms[order]
    requests = np.bincount(block, minlength=blocks).astype(np.int64)
    monkeypatch.setattr(stats, "_CHUNK", 1000)
    for buckets in (None, stats.bucket_of(ms)):
        b = stats.Blocks(requests, requests.copy(), ms, block, float(blocks), ok_bucket=buckets)
        used, running = stats._histogram(b)
        former_used, former_running = _former_running(b)
        assert np.array_equal(used, former_used)
        assert np.array_equal(running, former_running)


@pytest.mark.parametrize("arm", ["baseline", "optimized", "probe-baseline", "probe-optimized"])
def test_stage_blocks_are_the_former_blocks(arm: str) -> None:
    """Each stage's blocks and exact quantiles, as the partial sorts and 64-bit block numbers
    gave them."""
    for m in stage_metrics(load_run(SAMPLE / arm)):
        b = m.blocks
        assert b is not None
        assert b.ok_bucket is not None
        assert np.array_equal(b.ok_bucket, stats.bucket_of(b.ok_ms))
        assert int(b.successes.sum()) == len(b.ok_ms) == m.successes
        assert np.array_equal(b.successes, np.bincount(b.ok_block, minlength=b.count))
        n = len(b.ok_ms)
        for q, value in b.quantiles.items():
            rank = max(math.ceil(n * q), 1) - 1
            assert value == float(np.partition(b.ok_ms, rank)[rank])
        stats._HISTOGRAMS.clear()
        for q in (0.5, 0.75, 0.95):
            rank = max(math.ceil(n * q), 1) - 1
            assert stats._exact_quantile(b, q) == float(np.sort(b.ok_ms)[rank])


def _sequence(rng: np.random.Generator, counts: list[int]) -> list[np.ndarray]:
    """Weights for each count, then a draw of another kind (as the success metric's beta)."""
    out = [stats._block_weights(c, 50, rng) for c in counts]
    out.append(rng.beta(np.arange(1.0, 4.0), 2.0))
    return out


@pytest.mark.parametrize("guess", [[30, 40, 30, 40, 30, 40], [30, 41, 30, 41], [], [40]])
def test_weights_drawn_ahead_are_the_draws_the_generator_makes(guess: list[int]) -> None:
    """Drawn ahead from a right guess, a wrong one or none: the same weights, and the
    generator left in the same state (the draws after them are the same too)."""
    counts = [30, 40, 30, 40, 30, 40]
    direct = np.random.default_rng(11)
    expected = _sequence(direct, counts)
    expected_after = _sequence(direct, [30])
    rng = np.random.default_rng(11)
    with stats.DrawnAhead([(rng, guess)], draws=50):
        got = _sequence(rng, counts)
        after = _sequence(rng, [30])
    assert len(got) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(after, expected_after, strict=True))
    assert not stats._AHEAD


def test_a_plan_made_twice_is_drawn_once_and_a_new_one_supersedes() -> None:
    rng = np.random.default_rng(3)
    first = stats.DrawnAhead([(rng, [20, 20])], draws=10).start()
    same = stats.DrawnAhead([(rng, [20, 20])], draws=10)
    assert same.start() is first
    other = stats.DrawnAhead([(rng, [21, 20])], draws=10).start()
    assert first._cancelled and not other._cancelled
    direct = np.random.default_rng(3)
    assert np.array_equal(stats._block_weights(21, 10, rng),
                          stats._block_weights(21, 10, direct))
    for ahead in (same, other):
        ahead.stop()
    assert not stats._AHEAD
    assert not first._thread.is_alive() and not other._thread.is_alive()


@pytest.mark.parametrize("arm", ["baseline", "probe-optimized"])
def test_stage_figures_from_a_consumed_frame_are_the_same(arm: str) -> None:
    from loadproof.metrics import _build, read_requests

    run = load_run(SAMPLE / arm)
    for record in run.usable_stages():
        kept = _build(record["key"], [record], read_requests(run, record["key"]), run)
        frame = read_requests(run, record["key"])
        taken = _build(record["key"], [record], frame, run, consume=True)
        assert taken.to_dict() == kept.to_dict()
        assert kept.blocks is not None and taken.blocks is not None
        assert np.array_equal(kept.blocks.ok_block, taken.blocks.ok_block)
        assert np.array_equal(kept.blocks.requests, taken.blocks.requests)
        assert frame.width < 5  # its columns were taken out


@pytest.mark.parametrize("ordered", [True, False])
def test_block_sums_in_chunks_are_bincounts_sums(ordered: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    ids = np.repeat(np.arange(50, dtype=np.int32), rng.integers(0, 300, 50))
    values = np.concatenate([rng.lognormal(3, 2, len(ids) - 3), [-0.0, 1e300, 1e-300]])
    if not ordered:
        order = rng.permutation(len(ids))
        ids, values = ids[order], values[order]
    monkeypatch.setattr(stats, "_CHUNK", 777)
    assert np.array_equal(stats.block_sums(ids, values, 60),
                          np.bincount(ids, weights=values, minlength=60))


@pytest.mark.parametrize("base,cand", [("baseline", "optimized"),
                                       ("probe-baseline", "probe-optimized"),
                                       ("optimized", "baseline")])
def test_a_comparison_drawn_ahead_is_the_comparison_drawn_in_turn(
        base: str, cand: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from loadproof import compare

    ahead = compare.compare_runs(load_run(SAMPLE / base), load_run(SAMPLE / cand)).to_dict()
    assert not stats._AHEAD  # every thread stopped
    monkeypatch.setattr(compare, "_draws_ahead", lambda *_: stats.DrawnAhead([]))
    in_turn = compare.compare_runs(load_run(SAMPLE / base), load_run(SAMPLE / cand)).to_dict()
    assert ahead == in_turn
    intervals = [m["interval"] for s in ahead["stages"] for m in s["metrics"].values()]
    assert "within this run only" in intervals
