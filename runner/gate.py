"""``loadproof compare A B --fail-on ...``: a CI gate on a comparison's claims.

The gate reads each stage × metric's **claim** (its verdict after Holm's correction across
the claim family, :data:`loadproof.compare.CLAIM_METRICS`), never a bare per-comparison
verdict: a regression gate fails only on a regression loadproof would also put in a headline.
Metrics outside the claim family carry no claim and are never gated. With fewer than 3
repeats an arm gives "not replicated", which only ``--fail-on not-replicated`` gates."""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree as ET

from .compare import Comparison
from .errors import UsageError

GATE_EXIT = 8  # the exit code of a comparison that the gate failed
# --fail-on words -> the claims they gate
GATEABLE = {"regressed": "regressed", "trade-off": "trade-off",
            "not-replicated": "not replicated"}


@dataclass(frozen=True)
class GateResult:
    stage: str
    metric: str
    claim: str | None
    failed: bool
    reasons: tuple[str, ...] = ()


def parse_fail_on(text: str) -> frozenset[str]:
    """The claims ``--fail-on regressed[,trade-off,not-replicated]`` gates."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in GATEABLE]
    if not words or unknown:
        raise UsageError(f"--fail-on: {', '.join(unknown) or 'nothing given'} is not one of "
                         f"{', '.join(GATEABLE)} (comma-separated, e.g. --fail-on regressed)")
    return frozenset(GATEABLE[w] for w in words)


def gate(comparison: Comparison, fail_on: frozenset[str]) -> list[GateResult]:
    """One result per stage × claimable metric, ``failed`` when its claim is gated."""
    return [GateResult(stage.key, name, metric.claim, metric.claim in fail_on,
                       tuple(metric.reasons))
            for stage in comparison.stages for name, metric in stage.metrics.items()
            if metric.claim is not None]


def failure_lines(results: list[GateResult]) -> list[str]:
    return [f"gate failed: {r.stage} {r.metric}: {r.claim}" for r in results if r.failed]


def junit_xml(comparison: Comparison, results: list[GateResult]) -> str:
    """JUnit XML: one test case per stage × metric, a failure for each gated claim."""
    suite = ET.Element("testsuite", name=f"loadproof {comparison.comparison_id}",
                       tests=str(len(results)),
                       failures=str(sum(r.failed for r in results)), errors="0")
    for result in results:
        case = ET.SubElement(suite, "testcase", classname=f"loadproof.{result.stage}",
                             name=result.metric)
        text = "; ".join(result.reasons)
        if result.failed:
            failure = ET.SubElement(case, "failure", message=f"claim: {result.claim}")
            failure.text = text
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"claim: {result.claim}" + (f"; {text}" if text else "")
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def markdown_table(comparison: Comparison, results: list[GateResult]) -> str:
    """A table for a CI job summary: each stage × metric, its figures and its claim."""
    lines = [f"### loadproof: {comparison.candidate.label} vs {comparison.baseline.label}", "",
             "| stage | metric | baseline | candidate | ratio | 95% CI | claim | gate |",
             "|---|---|---:|---:|---:|---|---|---|"]

    def num(value: float | None) -> str:
        return "–" if value is None else f"{value:.4g}"

    for result in results:
        m = comparison.stage(result.stage).metrics[result.metric]
        ci = f"{m.ci95[0]:.3f}–{m.ci95[1]:.3f}" if m.ci95 else "no interval"
        name = m.label if "(" in m.label else f"{m.label} ({m.unit})"
        lines.append(f"| {result.stage} | {name} | {num(m.baseline)} | "
                     f"{num(m.candidate)} | {num(m.ratio)} | {ci} | {result.claim} | "
                     f"{'**failed**' if result.failed else 'passed'} |")
    failed = sum(r.failed for r in results)
    lines += ["", f"{failed} of {len(results)} gated checks failed." if failed
              else f"All {len(results)} gated checks passed."]
    return "\n".join(lines)
