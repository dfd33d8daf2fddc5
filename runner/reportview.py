"""The report's look: the first screen (title, one honest sentence, the main chart, what
changed, the evidence), the one results table, the per-endpoint table, the glossary and the
stylesheet for screen, phone and paper. Every figure comes from the Comparison; this module
only chooses words and layout."""

from __future__ import annotations

import html
from typing import Any

from . import stats
from .achievements import fmt_ratio, regression_texts
from .compare import CLAIM_METRICS, RESHAPED, Comparison, MetricComparison, StageComparison
from .endpoints import EndpointRow, endpoint_rows
from .metrics import StageMetrics
from .store import Run
from .summary import profile_settings

REPORT_CSS = """
<style>
  body, .jp-Notebook { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif;
                       color: #1f2328; }
  body.jp-Notebook, main.jp-Notebook { max-width: 60rem; margin: 0 auto; }
  .jp-Notebook { padding: 0 12px; }
  .jp-Cell { padding: 0 !important; }
  .jp-OutputArea-output { overflow-x: visible; }
  .jp-RenderedHTMLCommon h2 { font-size: 1.35em; margin: 1.6em 0 .4em 0; padding-bottom: .2em;
                              border-bottom: 1px solid #d0d7de; }
  .lp { line-height: 1.45; }
  .lp h1 { font-size: 2em; line-height: 1.2; margin: .6em 0 .3em 0; }
  .lp .lead { font-size: 1.15em; margin: .2em 0 .8em 0; }
  .lp .lead b { color: #0b4f8a; }
  .lp .evidence { color: #555; font-size: .88em; margin: .4em 0 1em 0; }
  .lp .tiles { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0 12px 0; }
  .lp .tile { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 12px;
              background: #f8fafc; flex: 0 1 auto; }
  .lp .tile .v { font-size: 1.35em; font-weight: 700; color: #0b4f8a; }
  .lp .tile .v.bad { color: #b42318; }
  .lp .tile .k { font-size: .82em; color: #444; }
  .lp .changed { margin: .3em 0 .6em 0; padding-left: 1.2em; columns: 3 15em;
                 font-size: .92em; }
  .lp .changed li { margin: .1em 0; }
  .lp .changed code { background: #f1f3f5; padding: 0 3px; border-radius: 3px; }
  .lp figure { margin: 8px 0 14px 0; break-inside: avoid; page-break-inside: avoid; }
  .lp figure img { width: 100%; max-width: 46rem; height: auto; display: block; }
  .lp figcaption { font-size: .88em; color: #444; margin-top: 2px; }
  .lp .scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
  .lp table.lpt { border-collapse: collapse; font-size: .88em; margin: 6px 0 12px 0; }
  .lp table.lpt th { background: #eef2f7; text-align: left !important; padding: 4px 8px;
                     font-weight: 600; }
  .lp table.lpt td { border-top: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; }
  .lp table.lpt td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
  .lp table.lpt tr.group th { background: #dde5ee; }
  .lp .v-improved { color: #116329; font-weight: 600; }
  .lp .v-regressed, .lp .v-trade-off { color: #b42318; font-weight: 600; }
  .lp .v-reshaped { color: #9a6700; font-weight: 600; }
  .lp .v-other { color: #57606a; }
  .lp ul.caveats li { color: #7a4b00; margin: .15em 0; }
  .lp blockquote { border-left: 4px solid #0b4f8a; margin: 6px 0; padding: 4px 12px;
                   background: #f4f8fc; }
  .lp dl.glossary dt { font-weight: 600; margin-top: .4em; float: none !important;
                       width: auto !important; }
  .lp dl.glossary dd { margin: 0 0 0 1.2em !important; padding: 0 !important; }
  .lp .runs, .lp .run-ids { color: #555; font-size: .8em; }
  .lp pre { white-space: pre-wrap; word-break: normal; overflow-wrap: anywhere; }
  @media (max-width: 640px) {
    body { font-size: 15px; }
    .jp-Notebook { padding: 0 8px !important; }
    .lp h1 { font-size: 1.5em; }
    .lp .lead { font-size: 1.02em; }
    .lp .tile { padding: 4px 8px; } .lp .tile .v { font-size: 1.1em; }
    .lp table.lpt { font-size: .8em; }
    .lp table.lpt td, .lp table.lpt th { padding: 3px 5px; }
    .lp table.lpt th { position: sticky; top: 0; }
    .lp figure img { max-width: 100%; }
    /* the results and endpoint tables stack: one block per row, each value with its label */
    .lp table.stack thead { display: none; }
    .lp table.stack, .lp table.stack tbody { display: block; width: 100%; }
    .lp table.stack tr { display: grid; grid-template-columns: 1fr 1fr; column-gap: 10px;
                         border-top: 1px solid #d0d7de; padding: 4px 2px; }
    .lp table.stack tr.group { display: block; padding: 0; }
    .lp table.stack tr.group th { display: block; }
    .lp table.stack td { border: 0; padding: 1px 0; text-align: left !important;
                         white-space: normal; }
    .lp table.stack td.name { grid-column: 1 / -1; font-weight: 600; }
    .lp table.stack td[data-label]::before { content: attr(data-label) ": "; color: #57606a;
                                             font-weight: 400; }
    .lp .changed { columns: 1; }
  }
  @page { size: A4; margin: 14mm 12mm 16mm 12mm;
          @bottom-left { content: string(runs); font-size: 7pt; color: #555; }
          @bottom-right { content: "page " counter(page) " of " counter(pages); font-size: 7pt;
                          color: #555; } }
  @media print {
    body { font-size: 10pt; }
    body.jp-Notebook, main.jp-Notebook { max-width: none; }
    .lp .run-ids { string-set: runs content(); }
    /* JupyterLab keeps each output whole on a page: a long table then leaves half a page
       empty before it; tables and lists may break (their rows and items do not) */
    .jp-OutputArea-child { break-inside: auto !important; page-break-inside: auto !important; }
    .lp ul li, .lp blockquote { break-inside: avoid; }
    .jp-MarkdownCell { break-after: avoid; page-break-after: avoid; }
    .lp h1, .lp h2, .lp h3, .lp h4 { break-after: avoid; }
    .lp table.lpt { font-size: 8.5pt; }
    .lp table.lpt tr { break-inside: avoid; }
    .lp table.lpt tbody tr:nth-child(-n+2) { break-after: avoid; }  /* no lone first row */
    .lp table.lpt td, .lp table.lpt th { padding: 2px 5px; }
    /* heights that let each chart share a page with its neighbours: no half-empty pages */
    .lp figure img { max-width: 15cm; max-height: 7cm; width: auto; }
    .lp figure img.main { max-height: 9cm; }
    .lp figure img.tall { max-height: 10.5cm; }
    .jp-RenderedHTMLCommon h2 { margin-top: 1em; }
    .lp .keep { break-inside: avoid; page-break-inside: avoid; }
    .lp .scroll { overflow: visible; }
  }
</style>
"""

_LOWER = {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}
PLAIN = {
    "latency_p50_ms": "typical latency (p50)",
    "latency_p95_ms": "slow requests (p95)",
    "latency_p99_ms": "slowest 1% (p99)",
    "throughput_rps": "answers per second",
    "goodput_rps": "successes per second",
    "success_rate": "success rate",
}


def esc(text: Any) -> str:
    return html.escape(str(text))


def where(m: StageMetrics | StageComparison) -> str:
    """A stage as a reader says it: "150 users", "750 req/s", or its name when imported."""
    model = m.baseline.model if isinstance(m, StageComparison) else m.model
    unit = {"vus": " users", "rate": " req/s"}.get(model or "", "")
    return f"{m.level}{unit}" if m.level is not None else m.key


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _value(metric: MetricComparison, value: float | None) -> str:
    if value is None:
        return "—"
    if metric.unit == "ms":
        return _ms(value)
    if metric.unit == "share":
        return f"{value:.2%}" if value < 1 else "100%"
    return f"{value:,.0f}/s"


def _change(ratio: float | None, lower_is_better: bool) -> float | None:
    """after/before − 1 from an improvement ratio (above 1 favours the candidate)."""
    if ratio is None or ratio <= 0:
        return None
    return (1 / ratio - 1) if lower_is_better else ratio - 1


def _pct(change: float | None) -> str:
    if change is None:
        return "—"
    if abs(change) < 0.0005:
        return "±0%"
    return f"{change:+.1%}".replace("-", "−")


def change_interval(ratio_ci: tuple[float, float] | None, lower_is_better: bool) -> str:
    """The 95% interval of the ratio, as an interval of the change after/before − 1."""
    if not ratio_ci:
        return "—"
    ends = sorted(c for c in (_change(ratio_ci[0], lower_is_better),
                              _change(ratio_ci[1], lower_is_better)) if c is not None)
    if len(ends) != 2:
        return "—"
    if _pct(ends[0]) == _pct(ends[1]) == "±0%":
        return "±0% (both ends under 0.05%)"
    return f"{_pct(ends[0])} to {_pct(ends[1])}"


def shown_verdict(stage: StageComparison, metric: MetricComparison) -> tuple[str, str]:
    """(words, css class) of a table row's verdict: the corrected claim for the headline
    family, the distribution guard on the p95, "figure only" for a change outside the family."""
    if metric.metric == "latency_p95_ms" and stage.distribution is not None \
            and stage.distribution.verdict == RESHAPED:
        if metric.verdict == "not replicated":  # the guard's figures, within one run
            return f"not replicated (within the run: {RESHAPED})", "v-other"
        return RESHAPED, "v-reshaped"
    word = metric.claim if metric.metric in CLAIM_METRICS and metric.claim else metric.verdict
    if metric.metric in CLAIM_METRICS and word == "no significant change" \
            and metric.verdict in ("improved", "regressed") and metric.p_holm is not None:
        # its own interval excludes no change, but the correction across the headline family
        # (every claimable stage x metric) does not let it stand as a claim: say both
        return (f"{metric.verdict} alone; not a claim after correction for all headline "
                f"measures (adjusted p = {metric.p_holm:.2f})"), "v-other"
    if metric.metric not in CLAIM_METRICS and word in ("improved", "regressed", "trade-off"):
        return f"{word} (figure, not a claim)", "v-other"
    css = {"improved": "v-improved", "regressed": "v-regressed",
           "trade-off": "v-trade-off"}.get(word, "v-other")
    return word, css


def _row(name: str, before: str, after: str, change: str, interval: str, verdict: str,
         css: str) -> str:
    return (f"<tr><td class='name'>{esc(name)}</td>"
            f"<td class='num' data-label='before'>{esc(before)}</td>"
            f"<td class='num' data-label='after'>{esc(after)}</td>"
            f"<td class='num' data-label='change'>{esc(change)}</td>"
            f"<td class='num' data-label='95% interval'>{esc(interval)}</td>"
            f"<td class='{css}' data-label='verdict'>{esc(verdict)}</td></tr>")


def _mean_row(stage: StageComparison) -> str | None:
    dist = stage.distribution
    if dist is None or dist.mean_baseline_ms is None or dist.mean_candidate_ms is None:
        return None
    repeats = min(len(stage.baseline.per_repeat or [1]), len(stage.candidate.per_repeat or [1]))
    if dist.mean_ci95 is None:
        verdict = "no interval"
    elif repeats < stats.MIN_REPEATS_FOR_VERDICT:
        verdict = "not replicated"
    else:
        verdict = stats.verdict(dist.mean_ci95) + " (figure, not a claim)"
    return _row("average latency (mean)", _ms(dist.mean_baseline_ms),
                _ms(dist.mean_candidate_ms), _pct(_change(dist.mean_ratio, True)),
                change_interval(dist.mean_ci95, True), verdict, "v-other")


def results_rows(comparison: Comparison) -> list[tuple[StageComparison, str, MetricComparison]]:
    """(stage, plain name, metric) in the order the table shows them; throughput and goodput
    merged into one row when they are equal (every answer succeeded)."""
    rows = []
    for stage in comparison.stages:
        for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
            rows.append((stage, PLAIN[name], stage.metrics[name]))
        through, good = stage.metrics["throughput_rps"], stage.metrics["goodput_rps"]
        if through.baseline == good.baseline and through.candidate == good.candidate:
            rows.append((stage, "answers per second (all succeeded)", good))
        else:
            rows += [(stage, PLAIN["throughput_rps"], through), (stage, PLAIN["goodput_rps"], good)]
        rows.append((stage, PLAIN["success_rate"], stage.metrics["success_rate"]))
    return rows


def requests_cells(stage: StageComparison) -> tuple[str, str, str, str, str, str]:
    """How many requests each version's figures at this stage are made of."""
    b, c = stage.baseline.requests, stage.candidate.requests
    return ("requests measured", f"{b:,}", f"{c:,}", "—", "—", "(the sample size)")


def results_table(comparison: Comparison) -> str:
    """The one table: per stage, each measure before → after, the change in %, its 95%
    interval and the verdict, coloured."""
    labels = (comparison.baseline.label, comparison.candidate.label)
    head = (f"<thead><tr><th>measure</th><th>before ({esc(labels[0])})</th>"
            f"<th>after ({esc(labels[1])})</th><th>change</th><th>95% interval of the change"
            "</th><th>verdict</th></tr></thead>")
    body = []
    current = None
    for stage, name, metric in results_rows(comparison):
        if stage is not current:
            current = stage
            body.append(f"<tr class='group'><th colspan='6'>{esc(where(stage))}"
                        + (f" — no claim: {esc('; '.join(stage.withheld))}"
                           if stage.withheld else "") + "</th></tr>")
            body.append(_row(*requests_cells(stage), "v-other"))
        verdict, css = shown_verdict(stage, metric)
        body.append(_row(name, _value(metric, metric.baseline), _value(metric, metric.candidate),
                         _pct(_change(metric.ratio, metric.lower_is_better)),
                         change_interval(metric.ci95, metric.lower_is_better), verdict, css))
        if metric.metric == "latency_p99_ms" and (mean := _mean_row(stage)):
            body.append(mean)
    return (f"<div class='scroll'><table class='lpt stack results'>{head}<tbody>{''.join(body)}"
            "</tbody></table></div>")


def endpoint_table(comparison: Comparison) -> str:
    rows = endpoint_rows(comparison)
    if not rows:
        return ("<p>These runs carry no request names (the <code>name</code> column), so there "
                "is no per-endpoint split.</p>")
    labels = (comparison.baseline.label, comparison.candidate.label)
    head = ("<thead><tr><th>request</th><th>requests</th><th>success</th><th>p50</th>"
            "<th>p95</th><th>p99</th><th>p95 change</th><th>verdict</th></tr></thead>")
    body = []
    current = None
    stages = {s.key: s for s in comparison.stages}
    for row in rows:
        if row.stage != current:
            current = row.stage
            body.append(f"<tr class='group'><th colspan='8'>{esc(where(stages[row.stage]))}"
                        f"</th></tr>")
        body.append(_endpoint_row(row))
    return (f"<p class='runs'>Each cell: {esc(labels[0])} → {esc(labels[1])}.</p>"
            f"<div class='scroll'><table class='lpt stack endpoints'>{head}<tbody>{''.join(body)}"
            "</tbody></table></div>")


def _arrow(before: str, after: str) -> str:
    return f"{before} → {after}"


def _endpoint_row(row: EndpointRow) -> str:
    b, c = row.baseline, row.candidate

    def count(arm: Any) -> str:
        return f"{arm.requests:,}" if arm else "—"

    def share(arm: Any) -> str:
        if not arm or arm.success_rate is None:
            return "—"
        return "100%" if arm.success_rate == 1 else f"{arm.success_rate:.2%}"

    def ms(arm: Any, name: str) -> str:
        return _ms(getattr(arm, name)) if arm else "—"

    css = {"improved": "v-improved", "regressed": "v-regressed"}.get(row.verdict, "v-other")
    return (f"<tr><td class='name'>{esc(row.name)}</td>"
            f"<td class='num' data-label='requests'>{_arrow(count(b), count(c))}</td>"
            f"<td class='num' data-label='success'>{_arrow(share(b), share(c))}</td>"
            f"<td class='num' data-label='p50'>{_arrow(ms(b, 'p50_ms'), ms(c, 'p50_ms'))}</td>"
            f"<td class='num' data-label='p95'>{_arrow(ms(b, 'p95_ms'), ms(c, 'p95_ms'))}</td>"
            f"<td class='num' data-label='p99'>{_arrow(ms(b, 'p99_ms'), ms(c, 'p99_ms'))}</td>"
            f"<td class='num' data-label='p95 change'>{_pct(_change(row.p95_ratio, True))}</td>"
            f"<td class='{css}' data-label='verdict'>{esc(row.verdict)}</td></tr>")


# --- the first screen ---------------------------------------------------------------------

def _repeats(comparison: Comparison) -> int:
    parts = [len(m.per_repeat or [m]) for m in comparison.baseline_metrics
             + comparison.candidate_metrics]
    return min(parts) if parts else 0


def _slower_stages(comparison: Comparison) -> list[str]:
    """Stages where the candidate's p95 was measurably worse (its interval below 1, or a
    claimed regression), as "50 users (21.7 → 49.2 ms)"."""
    found = []
    for stage in comparison.stages:
        p95 = stage.metrics["latency_p95_ms"]
        worse = p95.claim == "regressed" or (p95.ci95 is not None and p95.ci95[1] < 1)
        if worse and p95.baseline is not None and p95.candidate is not None:
            found.append(f"{where(stage)} ({_ms(p95.baseline)} → {_ms(p95.candidate)})")
    return found


def _capacity_change(name: str, comp: Comparison | None, hedge: bool = True) -> str | None:
    """A capacity range wholly below or above 1, in words; None otherwise. ``hedge``: say
    when its runs are too few for a verdict (unless the sentence says it for everything)."""
    cap = comp.capacity if comp is not None else None
    if cap is None or cap.ratio is None:
        return None
    unit = " users" if cap.model == "vus" else " req/s"
    shown = f"{cap.baseline.shown(unit)} → {cap.candidate.shown(unit)}"
    if hedge and cap.verdict == "not replicated":  # a measured range, not a verdict
        shown += "; too few runs per version for a verdict"
    if cap.ratio_high is not None and cap.ratio_high <= 1 and cap.ratio < 1:
        return f"{name} capacity under the SLO fell to {cap.ratio_text()} ({shown})"
    if cap.ratio_low is not None and cap.ratio_low >= 1 and cap.ratio > 1:
        return f"{name} capacity under the SLO rose to {cap.ratio_text()} ({shown})"
    return None


def headline_sentence(comparison: Comparison, probe: Comparison | None = None) -> str:
    """One sentence (HTML) with the result, its trade-offs and its regressions (the capacity
    probe's too, when there is one)."""
    cand = comparison.candidate.label
    head = comparison.headline
    if head is None:
        reason = "; ".join(comparison.guards) or "no stage could be compared"
        return f"No stage could be compared fairly: {esc(reason)}."
    p95, p50 = head.metrics["latency_p95_ms"], head.metrics["latency_p50_ms"]
    success = head.metrics["success_rate"]
    dist = head.distribution
    at = where(head)
    if dist is not None and dist.verdict == RESHAPED:
        # "fell" states the figures; "cut" would credit the change with a claim it lacks
        text = (f"At {esc(at)}, p95 latency with {esc(cand)} fell from {_ms(p95.baseline)} to "
                f"<b>{_ms(p95.candidate)}</b>, but its mean stayed {_ms(dist.mean_baseline_ms)}"
                f" → {_ms(dist.mean_candidate_ms)} and its median rose {_ms(p50.baseline)} → "
                f"{_ms(p50.candidate)}: <b>{RESHAPED}</b>")
    elif p95.claim == "trade-off" or p95.verdict == "trade-off":
        text = (f"At {esc(at)}, {esc(cand)} cut p95 latency from {_ms(p95.baseline)} to "
                f"{_ms(p95.candidate)} by failing more: success fell from "
                f"{_value(success, success.baseline)} to <b>{_value(success, success.candidate)}"
                "</b> (a trade-off, not a speed-up)")
    elif p95.ratio is not None and p95.ratio >= 1 and p95.claim == "improved":
        text = (f"At {esc(at)}, {esc(cand)} cut p95 latency from {_ms(p95.baseline)} to "
                f"<b>{_ms(p95.candidate)}</b> ({fmt_ratio(p95.ratio)} lower, {esc(p95.claim)})")
    elif p95.ratio is not None and p95.ratio >= 1:
        # lower as measured, but no claim: say why rather than "cut ... (no significant change)"
        why = (f"significant alone, not a claim after correcting for every headline measure "
               f"(adjusted p = {p95.p_holm:.2f})"
               if p95.verdict == "improved" and p95.p_holm is not None else str(p95.claim))
        text = (f"At {esc(at)}, p95 latency with {esc(cand)} measured {_ms(p95.candidate)} "
                f"against {_ms(p95.baseline)} ({fmt_ratio(p95.ratio)} lower as measured; "
                f"{esc(why)})")
    else:
        text = (f"At {esc(at)}, p95 latency rose from {_ms(p95.baseline)} to "
                f"<b>{_ms(p95.candidate)}</b> with {esc(cand)} ({esc(p95.claim)})")
    extras = []
    slower = [s for s in _slower_stages(comparison) if not s.startswith(f"{at} (")]
    if slower:
        extras.append("p95 was worse at " + ", ".join(slower))
    extras += [f"significantly worse: {t}" for t in regression_texts(comparison)
               if not any(t.startswith(s.split(' (')[0]) for s in slower)]
    repeats = _repeats(comparison)
    replicated = repeats >= stats.MIN_REPEATS_FOR_VERDICT  # else the last words say it
    own = _capacity_change("the", comparison, replicated)
    probes = _capacity_change("the arrival-rate probe's", probe, replicated)
    if own and probes and own.removeprefix("the ") == probes.removeprefix(
            "the arrival-rate probe's "):
        probes = None  # the comparison's capacity is the probe's: said once
    extras += [t for t in (own, probes) if t]
    if extras:
        text += "; " + "; ".join(esc(e) for e in dict.fromkeys(extras))
    if repeats < stats.MIN_REPEATS_FOR_VERDICT:
        runs = "one run" if repeats == 1 else f"{repeats} runs"
        text += (f". With {runs} per version these are measurements, not verdicts (a verdict "
                 f"needs {stats.MIN_REPEATS_FOR_VERDICT})")
    return text + "."


def changed_items(comparison: Comparison) -> list[str]:
    """The settings (and the run set-up) that differ between the two versions."""
    base, cand = comparison.baseline, comparison.candidate
    items = []
    b_set, c_set = profile_settings(base), profile_settings(cand)
    for key in dict.fromkeys(list(b_set) + list(c_set)):
        if key == "profile" or b_set.get(key) == c_set.get(key):
            continue
        items.append(f"<code>{esc(key)}</code>: {esc(b_set.get(key, '—'))} → "
                     f"{esc(c_set.get(key, '—'))}")
    for what, get in (("target", lambda r: r.manifest.get("target")),
                      ("script", lambda r: (r.manifest.get("script") or {}).get("sha256")),
                      ("k6", lambda r: (r.manifest.get("k6") or {}).get("version")),
                      ("commit", lambda r: (r.manifest.get("commit_info") or {}).get("id"))):
        if what == "target" and base.manifest.get("profile"):
            continue  # a profile's service listens on a fresh port each run
        b, c = get(base), get(cand)
        if b != c:
            items.append(f"{what}: {esc(str(b)[:16])} → {esc(str(c)[:16])}")
    return items


def _plan_text(run: Run) -> str:
    plan = run.manifest.get("plan") or {}
    if not plan:
        return "imported stages"
    levels = plan.get("levels") or []
    duration = plan.get("duration_s")
    warm = plan.get("warmup_s")
    return (f"{len(levels)} stages of {duration:g} s" if duration is not None
            else f"{len(levels)} stages") + (f" (+{warm:g} s warm-up)" if warm else "")


def evidence_line(comparison: Comparison) -> str:
    cand = comparison.candidate
    total = sum(m.requests for m in comparison.baseline_metrics + comparison.candidate_metrics)
    machine = cand.manifest.get("machine_info") or {}
    commit = cand.manifest.get("commit_info") or {}
    k6 = (cand.manifest.get("k6") or {}).get("version")
    repeats = _repeats(comparison)
    parts = [f"{repeats} run{'s' if repeats != 1 else ''} per version × {_plan_text(cand)}",
             f"{total:,} requests"]
    if k6:
        parts.append(f"k6 {k6}")
    if machine:
        parts.append(f"on host {machine.get('node', '?')} ({machine.get('system', '')} "
                     f"{machine.get('machine', '')}, {machine.get('cpu_count', '?')} CPUs), "
                     "load generator and target on the same machine"
                     if cand.manifest.get("profile") else
                     f"k6 on host {machine.get('node', '?')} ({machine.get('cpu_count', '?')} "
                     "CPUs)")
    if commit.get("id"):
        parts.append(f"commit {str(commit['id'])[:10]}{' (dirty)' if commit.get('dirty') else ''}")
    return "Evidence: " + " · ".join(esc(p) for p in parts)


def runs_line(comparison: Comparison) -> str:
    base, cand = comparison.baseline, comparison.candidate
    return (f"{esc(base.label)}: run {esc(base.run_id)} · {esc(cand.label)}: run "
            f"{esc(cand.run_id)}")


def tiles(achievement: dict[str, Any]) -> str:
    """A tile for each claim that was made (a corrected verdict, or a derived cost); none
    for figures that are not claims."""
    names = {"latency_improvement": "p95 latency", "capacity_increase": "capacity under SLO",
             "success_rate_improvement": "success rate", "throughput_improvement": "goodput",
             "cost_savings": "cost"}
    out = []
    for key, label in names.items():
        record = achievement["measurements"].get(key)
        value = achievement["metrics"].get(key)
        if not record or value is None:
            continue
        verdict = record.get("verdict")
        if verdict not in ("improved", "regressed", "trade-off", "derived"):
            continue
        css = "bad" if verdict in ("regressed", "trade-off") else ""
        out.append(f"<div class='tile'><div class='v {css}'>{esc(value.split(' (')[0])}</div>"
                   f"<div class='k'>{esc(label)}: {esc(verdict)}</div></div>")
    return f"<div class='tiles'>{''.join(out)}</div>" if out else ""


GLOSSARY = [
    ("p50, p95, p99", "the latency that half, 95% and 99% of successful answers were faster "
     "than (nearest-rank: an actual measured answer, not an interpolation); p50 is the typical "
     "request, p95 and p99 the slow ones."),
    ("average latency (mean)", "the sum of the successful answers' latencies divided by their "
     "number. At an unchanged rate of answers, an unchanged mean means requests spend as long in "
     "the service on average (Little's law), whatever the percentiles do."),
    (RESHAPED, "the p95 improved while the mean did not change beyond its interval and the "
     "median got worse: the slowest requests gained what the typical one lost."),
    ("answers per second, successes per second", "all answers per second of the stage "
     "(throughput), and only the successful ones (goodput); one row when they are equal."),
    ("success rate", "successful answers over all requests; 429 (rate-limited) answers and "
     "errors count against it."),
    ("change and its 95% interval", "after ÷ before − 1. With two or more runs per version "
     "the interval comes from the spread between runs; with one, from resampling the run's "
     "1-second blocks, which covers variation within that run only."),
    ("improved, regressed, no significant change", "the interval lies above, below, or "
     "across no change; the headline measures (p95, goodput, success rate at each stage) are "
     "corrected together (Holm's method) before they are called a claim."),
    ("not replicated", "fewer than 3 runs per version: the figure is a measurement, not a "
     "verdict."),
    ("trade-off", "a latency or throughput gain while the success rate fell (failing fast is "
     "quick)."),
    ("figure, not a claim", "a change outside the corrected headline measures: shown, never "
     "quoted as a result."),
    ("SLO", "the service-level objective the capacity is measured against: a p95 bound and a "
     "minimum success rate."),
    ("capacity", "the highest load level that this and every lower level met the SLO at, in "
     "every run."),
    ("knee", "in an arrival-rate probe, the first rate where p95 more than doubles over the "
     "lightest rate's, or the generator drops iterations."),
    ("virtual users, arrival rate", "a closed load (each user sends its next request after the "
     "last answer and a pause) and an open one (requests arrive at a set rate, whatever the "
     "answers)."),
    ("version, arm", "one side of the comparison (its runs): before (baseline) and after "
     "(candidate)."),
    ("goodput", "successful answers per second."),
    ("caveats", "what the claim guards raised: why a figure is not claimed, or claims less "
     "than it seems."),
]


def glossary() -> str:
    items = "".join(f"<li><b>{esc(term)}</b>: {esc(text)}</li>" for term, text in GLOSSARY)
    return f"<ul class='glossary'>{items}</ul>"


def plain_keys(comparison: Comparison, text: str) -> str:
    """Stage keys ("s4-150vus") and bound words in prose, as a reader says them."""
    for stage in comparison.stages:
        text = text.replace(f"{stage.key}:", f"at {where(stage)}:").replace(stage.key,
                                                                         where(stage))
    return (text.replace("at_least", "at least").replace("at_most", "at most")
            .replace("1 repeat(s) in an arm", "1 run in a version")
            .replace("repeats per arm", "runs per version")
            .replace(" arm ", " version ").replace(" arms ", " versions "))


# --- the Markdown report: everything the HTML says, as text ---------------------------------

def claims_text(achievement: dict[str, Any]) -> str:
    """The tiles as one line of text: "1.57x p95 latency: improved; ..." (value, then what)."""
    return _text(tiles(achievement).replace("</div><div class='k'>", " ")
                 .replace("</div></div>", "; ")).strip("; ")


def _text(fragment: str) -> str:
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _capacity_md(name: str, comp: Comparison, *, table: bool = True) -> list[str]:
    """A capacity block of report.md: the ratio and each arm's capacity (unless ``table`` is
    False: shown already), then any search traces."""
    from .capacity import trace_rows

    cap = comp.capacity
    unit = " users" if cap.model == "vus" else " req/s"
    if cap.basis == "search":
        name = "Capacity search"
    out = [f"### {name}", ""]
    if not table:
        out = []
    elif cap.ratio is not None:
        out += [f"Capacity ratio {cap.ratio_text()} ({cap.verdict}).", ""]
    else:
        out += [f"No capacity ratio: {plain_keys(comp, cap.reason or '')}.", ""]
    rows = []
    for run, arm in ((comp.baseline, cap.baseline), (comp.candidate, cap.candidate)):
        knee = (f"{arm.knee_level}{unit}: {arm.knee_reason}" if arm.knee_level
                else (arm.knee_reason or "—"))
        rows.append([run.label, arm.shown(unit), knee if cap.model == "rate" else "—"])
    if table:
        out += _md(["version", f"capacity (p95 ≤ {cap.slo.p95_ms:g} ms, success ≥ "
                               f"{cap.slo.success:.0%})", "knee"], rows)
    for role, run in (("baseline", comp.baseline), ("candidate", comp.candidate)):
        if trace := trace_rows(run):
            out += [f"Search trace, {role}: {run.label}", ""]
            out += _md(list(trace[0]), [[_trace_cell(k, v) for k, v in row.items()]
                                        for row in trace])
    return out


def _trace_cell(column: str, value: Any) -> str:
    """A search trace's cell: the success share as a percentage, other figures to 0.1."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2%}" if column == "success" else f"{value:,.1f}"
    return str(value)


def report_markdown(comparison: Comparison, achievement: dict[str, Any], title: str,
                    probe: Comparison | None = None) -> str:
    """report.md: the HTML report's sections in the same order, charts as their alt text."""
    from . import chartdata
    from .outcome import threshold_lines
    from .summary import METHOD_TEXT, caveats, integrity_rows, methodology_rows, talking_points

    c = comparison
    out = [f"# {title}", "", _text(headline_sentence(c, probe)), ""]
    claimed = claims_text(achievement)
    if claimed:
        out += [f"**Claims:** {claimed}", ""]
    out += [f"*Chart: {chartdata.main_latency(c).alt}*", "", f"**What changed** ({c.baseline.label} → "
            f"{c.candidate.label}):", ""]
    out += [f"- {_text(item)}" for item in changed_items(c)] or ["- no recorded setting differs"]
    out += ["", _text(evidence_line(c)), "", _text(runs_line(c)), "", "## Results by stage", ""]
    rows = []
    seen = set()
    for stage, name, metric in results_rows(c):
        if stage.key not in seen:
            seen.add(stage.key)
            rows.append([where(stage), *requests_cells(stage)])
        verdict, _ = shown_verdict(stage, metric)
        rows.append([where(stage), name, _value(metric, metric.baseline),
                     _value(metric, metric.candidate),
                     _pct(_change(metric.ratio, metric.lower_is_better)),
                     change_interval(metric.ci95, metric.lower_is_better), verdict])
        dist = stage.distribution
        if metric.metric == "latency_p99_ms" and dist is not None \
                and dist.mean_baseline_ms is not None:
            rows.append([where(stage), "average latency (mean)", _ms(dist.mean_baseline_ms),
                         _ms(dist.mean_candidate_ms), _pct(_change(dist.mean_ratio, True)),
                         change_interval(dist.mean_ci95, True),
                         "not replicated" if _repeats(c) < stats.MIN_REPEATS_FOR_VERDICT
                         else (stats.verdict(dist.mean_ci95) + " (figure, not a claim)"
                               if dist.mean_ci95 else "no interval")])
    out += _md(["stage", "measure", f"before ({c.baseline.label})", f"after ({c.candidate.label})",
                "change", "95% interval of the change", "verdict"], rows)
    out += ["## Per endpoint", ""]
    ends = endpoint_rows(c)
    if ends:
        stages = {s.key: s for s in c.stages}
        out += _md(["stage", "request", "requests", "success", "p50", "p95", "p99",
                    "p95 change", "verdict"],
                   [[where(stages[r.stage]), r.name] + [
                       _text(cell) for cell in _endpoint_cells(r)] for r in ends])
    else:
        out += ["These runs carry no request names: no per-endpoint split.", ""]
    out += ["## Charts", ""]
    for name in ("latency_over_time", "latency_ecdf", "throughput_vs_load"):
        out += [f"- {chartdata.PLANS[name](c).alt}"]
    out += ["", "## Capacity", ""]
    out += _capacity_md("Stage plan", c)
    if probe is not None:
        # when the comparison carries the capacity searches' ratio, the probe adds its traces
        out += _capacity_md("Arrival-rate probe", probe,
                            table=c.capacity.basis != "search")
        out += [f"*Chart: {chartdata.latency_vs_load(probe).alt}*", ""]
    notes = caveats(c)
    if probe is not None:
        notes += [f"probe {n}" for n in plain_notes(probe, caveats(probe))]
    for run in (c.baseline, c.candidate):
        notes += [f"{run.label}: k6 threshold {line}" for line in threshold_lines(run.stages)]
        notes += [f"{run.label}: {w}" for w in run.manifest.get("warnings") or []]
    notes = plain_notes(c, notes)
    out += ["## Caveats", ""] + ([f"- {n}" for n in notes] or ["- none raised"]) + [""]
    out += ["## Interview talking points", ""]
    for point in talking_points(c):
        out += [f"> {point}", ""]
    integrity = integrity_rows(c)
    out += ["## Measurement integrity", ""]
    out += (_md(list(integrity[0]), [list(r.values()) for r in integrity]) if integrity
            else ["These runs recorded no measurement conditions.", ""])
    method = methodology_rows(c)
    out += ["## Methodology and provenance", "", METHOD_TEXT, ""]
    out += _md(list(method[0]), [[str(v).split(": ", 1)[-1] if k == "arm" else v  # as the HTML
                                  for k, v in r.items()] for r in method])
    out += ["## Glossary", ""] + [f"- **{term}**: {text}" for term, text in GLOSSARY] + [""]
    return "\n".join(out)


def _endpoint_cells(row: EndpointRow) -> list[str]:
    import re

    cells = re.findall(r"<td[^>]*>(.*?)</td>", _endpoint_row(row))
    return cells[1:]


def plain_notes(comparison: Comparison, notes: list[str]) -> list[str]:
    """Caveats once each, in plain words: a note repeated for several stages ("s1-10vus: p95
    latency: not replicated (...)") is said once, naming the stages."""
    keys = {s.key: s for s in comparison.stages}
    grouped: dict[str, list[str]] = {}
    for note in dict.fromkeys(notes):
        key, _, rest = note.partition(": ")
        stage = keys.get(key)
        if stage is not None and rest:
            # a stage's own figures inside the text stay; the stage moves to the front
            grouped.setdefault(rest, []).append(where(stage))
        else:
            grouped.setdefault(note, [])
    out = []
    for text, stages in grouped.items():
        prefix = ""
        if stages:
            prefix = ("at " + (stages[0] if len(stages) == 1 else
                               ", ".join(stages[:-1]) + " and " + stages[-1]) + ": ")
        out.append(plain_keys(comparison, prefix + text))
    return out
