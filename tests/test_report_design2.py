"""The report's first-screen chart draws the comparison (the table's values and intervals), so
the two cannot disagree and the report reads the requests once."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from loadproof import charts, stats
from loadproof import compare as compare_module
from loadproof import notebook as nb
from loadproof.compare import compare_runs
from loadproof.handoff import comparison_from_dict, release_samples
from loadproof.store import load_run

from .conftest import SAMPLE
from .helpers import make_repeated_run


def _plotted(chart: charts.Chart, label: str) -> tuple[list[float], list[float]]:
    ax = chart.figure.axes[0]
    line = next(line for line in ax.get_lines() if line.get_label() == label)
    xs, ys = (list(map(float, values)) for values in line.get_data())
    plt.close(chart.figure)
    return xs, ys


def _bands(chart: charts.Chart) -> list[list[tuple[float, float, float]]]:
    """Each shaded band as (x, low, high) per point, in drawing order."""
    out = []
    for band in chart.figure.axes[0].collections:
        vertices = band.get_paths()[0].vertices
        # fill_between's path: the low edge left to right, then the high edge back
        points = len(vertices) // 2 - 1
        low = vertices[1:points + 1]
        high = vertices[points + 2:2 * points + 2][::-1]
        out.append([(float(x), float(lo), float(hi)) for (x, lo), (_, hi)
                    in zip(low, high, strict=True)])
    plt.close(chart.figure)
    return out


def _runs(tmp_path: Path, repeats: int) -> tuple[object, object]:
    rng = np.random.default_rng(7)

    def arm(label: str, scale: float) -> object:
        stages = {f"s{i}-{level}vus": (level, [(list(rng.lognormal(np.log(20 * scale * i), 0.4, 300)),
                                                 [200] * 300) for _ in range(repeats)])
                  for i, level in enumerate((10, 50), start=1)}
        return make_repeated_run(tmp_path, label, stages)

    return arm("before", 1.0), arm("after", 0.8)


@pytest.mark.parametrize("repeats", [1, 3])
def test_main_chart_draws_the_tables_values_and_intervals(tmp_path: Path, repeats: int) -> None:
    base, cand = _runs(tmp_path, repeats)
    comparison = compare_runs(base, cand)  # type: ignore[arg-type]
    for stage in comparison.stages:
        for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
            metric = stage.metrics[name]
            for side in ("baseline", "candidate"):
                value, ci = getattr(metric, side), getattr(metric, f"{side}_ci95")
                if repeats == 1:  # one run shows no interval: it cannot cover run-to-run spread
                    assert ci is None, (stage.key, name, side)
                    continue
                assert ci is not None and ci[0] <= value <= ci[1], (stage.key, name, side)
                m = getattr(stage, side)
                if repeats >= 2:  # the interval of the geometric mean of the repeats
                    expected = stats.repeats_interval(
                        [getattr(p.latency_ok, name.removeprefix("latency_")) for p in m.per_repeat])
                    assert expected is not None and ci == pytest.approx(expected)
    chart = charts.main_latency(comparison)
    for q, name in (("p95", "latency_p95_ms"), ("p50", "latency_p50_ms")):
        for side, label in (("baseline", "before"), ("candidate", "after")):
            xs, ys = _plotted(charts.main_latency(comparison), f"{label} {q}")
            assert xs == [10.0, 50.0]
            assert ys == pytest.approx([getattr(s.metrics[name], side) for s in comparison.stages])
    bands = _bands(chart)
    # drawn per arm: p95 then p50, each its comparison's interval
    expected_bands = [[(float(s.level or 0),
                        *(getattr(s.metrics[name], f"{side}_ci95")
                          or (getattr(s.metrics[name], side),) * 2))
                       for s in comparison.stages]
                      for side in ("baseline", "candidate")
                      for name in ("latency_p95_ms", "latency_p50_ms")]
    assert len(bands) == len(expected_bands)
    for got, want in zip(bands, expected_bands, strict=True):
        assert np.allclose(got, want)


def test_the_first_screen_reads_no_request_when_the_comparison_is_handed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From comparison.json (as ``loadproof report`` hands it over), the first screen's chart
    is drawn without opening a requests file, and equals the one drawn from a fresh
    comparison."""
    fresh = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t")
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(fresh.comparison.to_dict(), default=str))
    handed = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t",
                            comparison_file=str(path))
    release_samples(handed.comparison)

    def no_requests(*_: object, **__: object) -> None:
        raise AssertionError("the first screen read the requests again")

    monkeypatch.setattr(pl, "scan_parquet", no_requests)
    monkeypatch.setattr(pl, "read_parquet", no_requests)
    shown = nb.header(handed).data
    monkeypatch.undo()
    assert shown == nb.header(fresh).data


def test_arm_intervals_survive_the_handoff_and_leave_the_ratios_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    comparison = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized"))
    data = json.loads(json.dumps(comparison.to_dict(), default=str))
    again = comparison_from_dict(data)
    for mine, theirs in zip(comparison.stages, again.stages, strict=True):
        for name, metric in mine.metrics.items():
            other = theirs.metrics[name]
            assert other.baseline_ci95 == metric.baseline_ci95
            assert other.candidate_ci95 == metric.candidate_ci95
            if name.startswith("latency_"):  # the samples are one run per version
                assert metric.baseline_ci95 is None and metric.candidate_ci95 is None
            if not name.startswith("latency_"):
                assert metric.baseline_ci95 is None and metric.candidate_ci95 is None
    # every other figure is what it was before the arms' intervals existed: they draw from a
    # random generator of their own, and only add keys to comparison.json
    monkeypatch.setattr(compare_module, "_arm_intervals", lambda stage: None)
    without = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized"))
    for stage in data["stages"]:
        for metric in stage["metrics"].values():
            metric["baseline_ci95"] = metric["candidate_ci95"] = None
    assert json.loads(json.dumps(without.to_dict(), default=str)) == data


def test_repeats_interval_is_the_t_interval_of_the_log_values() -> None:
    values = [100.0, 120.0, 110.0]
    low, high = stats.repeats_interval(values)  # type: ignore[misc]
    logs = np.log(values)
    half = 4.302652729911275 * logs.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert low == pytest.approx(math.exp(logs.mean() - half))
    assert high == pytest.approx(math.exp(logs.mean() + half))
    assert stats.repeats_interval([100.0]) is None
    assert stats.repeats_interval([100.0, 0.0]) is None


def test_the_probes_chart_sits_under_its_table_and_stays_with_it_on_paper() -> None:
    from loadproof.reportview import REPORT_CSS

    report = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t",
                            probe_baseline_run=str(SAMPLE / "probe-baseline"),
                            probe_candidate_run=str(SAMPLE / "probe-optimized"))
    page = nb.capacity(report).data
    probe = page[page.index("Arrival-rate probe"):]
    block = page[page.rindex("<div class='keep'>", 0, page.index("Arrival-rate probe")):]
    assert block.index("Arrival-rate probe") < block.index("<table") < block.index("<figure>")
    assert probe.index("</table>") < probe.index("<figure>")
    assert page.count("<figure>") == 1 and "where p95 bends upward is the knee" in probe
    assert ".lp .keep { break-inside: avoid;" in REPORT_CSS
    # no probe: no chart and no kept block
    alone = nb.capacity(nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t"))
    assert "<figure>" not in alone.data and "keep" not in alone.data


def test_an_unreplicated_capacity_range_is_hedged_once(tmp_path: Path) -> None:
    """The probe's capacity range from one run each is no verdict: said beside it when the
    main comparison is replicated, and once for everything when it is not."""
    from loadproof.reportview import headline_sentence

    probe = compare_runs(load_run(SAMPLE / "probe-baseline"), load_run(SAMPLE / "probe-optimized"))
    assert probe.capacity.verdict == "not replicated" and probe.capacity.ratio is not None
    base, cand = _runs(tmp_path, 3)
    replicated = html.unescape(headline_sentence(compare_runs(base, cand), probe))  # type: ignore[arg-type]
    assert "probe's capacity under the SLO fell" in replicated
    assert "too few runs per version for a verdict" in replicated
    assert "measurements, not verdicts" not in replicated
    single = headline_sentence(compare_runs(load_run(SAMPLE / "baseline"),
                                            load_run(SAMPLE / "optimized")), probe)
    assert "too few runs per version" not in single
    assert single.count("measurements, not verdicts") == 1
    assert " cut p95" not in single  # one run each: the figures fell, no claim credits it
    # a comparison whose capacity is the probe's own says it once, not twice
    same = html.unescape(headline_sentence(probe, probe))  # type: ignore[arg-type]
    assert same.count("capacity under the SLO") == 1, same


def test_one_runs_figures_read_as_measurements_in_the_table_and_methodology() -> None:
    import re

    from loadproof.reportview import change_interval, results_table

    report = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", results_table(report.comparison))
    # the distribution guard's words, but as what one run per version can say
    assert "not replicated (within the run: tail reshaped, not faster)" in cells
    assert "tail reshaped, not faster" not in cells
    assert change_interval((0.9999, 1.0002), False) == "±0% (both ends under 0.05%)"
    assert change_interval((0.98, 1.03), False) == "−2.0% to +3.0%"
    method = nb.methodology(report).data
    assert "<th>arm</th>" not in method  # the arms are the columns, named by label
    assert ">1000.0<" in method and "1,000.00" not in method  # a setting as it is written
