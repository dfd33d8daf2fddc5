"""Small, pure statistics: nearest-rank percentiles and bootstrap intervals for ratios.

The bootstrap over requests is done exactly but cheaply: the q-quantile of a resample of n
requests is the ceil(n*U)-th order statistic of the sample, where U ~ Beta(m, n-m+1) and
m = ceil(n*q) (resampling from the empirical distribution is F_n^-1 of uniforms). Counts
per stage are Poisson (rates) and successes binomial (shares). With two or more repeats,
the repeats are resampled too (hierarchical bootstrap)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

DRAWS = 2000
FloatArray = NDArray[np.float64]


def percentile(sorted_values: FloatArray, q: float) -> float | None:
    """Nearest-rank percentile of an ascending array; None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    index = max(math.ceil(n * q), 1) - 1
    return float(sorted_values[min(index, n - 1)])


def draw_quantile(sorted_values: FloatArray, q: float, rng: np.random.Generator,
                  draws: int = DRAWS) -> FloatArray:
    n = len(sorted_values)
    if n == 0:
        return np.full(draws, np.nan)
    m = max(math.ceil(n * q), 1)
    u = rng.beta(m, n - m + 1, size=draws)
    idx = np.clip(np.ceil(n * u).astype(np.int64) - 1, 0, n - 1)
    return sorted_values[idx]


def draw_rate(count: int, duration_s: float, rng: np.random.Generator,
              draws: int = DRAWS) -> FloatArray:
    if duration_s <= 0:
        return np.full(draws, np.nan)
    return rng.poisson(count, size=draws) / duration_s


def draw_share(successes: int, total: int, rng: np.random.Generator,
               draws: int = DRAWS) -> FloatArray:
    if total <= 0:
        return np.full(draws, np.nan)
    return rng.binomial(total, successes / total, size=draws) / total


def combine_repeats(per_repeat: Sequence[FloatArray], rng: np.random.Generator) -> FloatArray:
    """Hierarchical bootstrap: resample repeats with replacement, average their draws."""
    if len(per_repeat) == 1:
        return per_repeat[0]
    matrix = np.vstack(per_repeat)  # repeats x draws
    repeats, draws = matrix.shape
    chosen = rng.integers(0, repeats, size=(draws, repeats))
    return np.asarray(matrix[chosen, np.arange(draws)[:, None]].mean(axis=1), dtype=np.float64)


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


def ratio_interval(baseline_draws: FloatArray, candidate_draws: FloatArray,
                   lower_is_better: bool, point: float) -> tuple[float, float] | None:
    """95% percentile interval of the ratio draws, widened if needed to contain ``point``."""
    num, den = ((baseline_draws, candidate_draws) if lower_is_better
                else (candidate_draws, baseline_draws))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num / den
    finite = ratios[np.isfinite(ratios)]
    if len(finite) < 0.95 * len(ratios) or len(finite) == 0:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(min(low, point)), float(max(high, point))


def verdict(ci95: tuple[float, float] | None) -> str:
    if ci95 is None:
        return "not comparable"
    if ci95[0] > 1.0:
        return "improved"
    if ci95[1] < 1.0:
        return "regressed"
    return "no significant change"
