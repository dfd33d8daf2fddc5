"""What the notebooks call: load, compare and display. Notebooks hold parameters and calls
only; everything that computes lives in the package (and is tested there)."""

from __future__ import annotations

import html
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import charts, summary
from .achievements import AchievementOptions, build_achievement
from .compare import Comparison, Slo, compare_runs
from .errors import RunStoreError, UsageError
from .metrics import metrics_table, stage_metrics
from .outcome import threshold_lines
from .store import PROJECT_ROOT, Run, load_run

REPORT_CSS = """
<style>
  body, .jp-Notebook { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
  .lp h1 { font-size: 1.9em; margin: 0 0 .2em 0; }
  .lp .sub { color: #555; margin-bottom: 1em; }
  .lp .cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0 16px 0; }
  .lp .card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 14px;
              min-width: 150px; flex: 1 1 150px; background: #f8fafc; }
  .lp .card .v { font-size: 1.6em; font-weight: 700; color: #0b4f8a; }
  .lp .card .v.bad { color: #b42318; } .lp .card .v.flat { color: #6b7280; }
  .lp .card .k { font-size: .85em; color: #444; }
  .lp .card .ci { font-size: .8em; color: #666; }
  .lp table.lpt { border-collapse: collapse; font-size: .85em; margin: 6px 0 12px 0; }
  .lp table.lpt th { background: #eef2f7; text-align: left; padding: 4px 8px; }
  .lp table.lpt td { border-top: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; }
  .lp table.lpt th { text-align: left !important; }
  .lp ul.caveats li { color: #7a4b00; }
  .lp blockquote { border-left: 4px solid #0b4f8a; margin: 6px 0; padding: 4px 12px;
                   background: #f4f8fc; }
  .lp pre.stages { background: #f6f8fa; padding: 8px; font-size: .82em; white-space: pre-wrap; }
  @page { size: A4; margin: 14mm 12mm; }
  @media print {
    .jp-Cell { break-inside: avoid; }
    .jp-MarkdownCell { break-after: avoid; page-break-after: avoid; }
    .lp table.lpt { font-size: .7em; }
    .lp table.lpt td, .lp table.lpt th { padding: 3px 5px; }
    img { max-width: 100%; }
  }
</style>
"""


_OPTIONAL_STR = (str, type(None))
_NUMBER = (int, float)
PARAMETERS: dict[str, dict[str, tuple[type, ...]]] = {
    "report": {
        "baseline_run": (str,), "candidate_run": (str,), "probe_baseline_run": _OPTIONAL_STR,
        "probe_candidate_run": _OPTIONAL_STR, "title": (str,), "slo_p95_ms": _NUMBER,
        "slo_success": _NUMBER, "min_successes": (int,),
        "unit_cost": (int, float, type(None)), "interview_value": _OPTIONAL_STR,
        "salary_target": _OPTIONAL_STR, "completion_date": _OPTIONAL_STR, "runs_dir": (str,),
        "comparison_file": _OPTIONAL_STR,
    },
    "compare": {
        "baseline_run": (str,), "candidate_run": (str,), "slo_p95_ms": _NUMBER,
        "slo_success": _NUMBER, "min_successes": (int,), "runs_dir": (str,),
    },
    "load_test": {
        "run_now": (bool,), "existing_run": (str,), "target": _OPTIONAL_STR,
        "profile": _OPTIONAL_STR, "label": (str,), "stages": (str, list), "model": (str,),
        "stage_duration": (str, int, float), "warmup": (str, int, float), "script": (str,),
        "repeat": (int,), "out_dir": (str,),
    },
}
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# An experiment file is usable as a papermill parameter file (-f experiment.yaml): its keys
# are known everywhere; `slo` and `report` fill the matching notebook parameters.
EXPERIMENT_PARAMETERS: dict[str, tuple[type, ...]] = {
    "title": (str,), "name": (str,), "arms": (dict,), "baseline": (str,), "candidate": (str,),
    "model": (str,), "stages": (list, str), "stage_duration": (str, int, float),
    "warmup": (str, int, float), "repeat": (int,), "script": (str,), "slo": (dict,),
    "probe": (dict, type(None)), "report": (dict, type(None)),
}
_FROM_EXPERIMENT = {("slo", "p95_ms"): "slo_p95_ms", ("slo", "success"): "slo_success",
                    ("slo", "min_successes"): "min_successes",
                    ("report", "unit_cost"): "unit_cost",
                    ("report", "interview_value"): "interview_value",
                    ("report", "salary_target"): "salary_target",
                    ("report", "completion_date"): "completion_date"}


def check_parameters(namespace: dict[str, Any], notebook: str) -> None:
    """Before anything runs: unknown parameters and wrong types are a clear UsageError."""
    spec = PARAMETERS[notebook]
    given = {k for k, v in namespace.items() if not k.startswith("_")
             and k not in _IPYTHON_NAMES and not isinstance(v, types.ModuleType)}
    unknown = sorted(given - set(spec) - set(EXPERIMENT_PARAMETERS))
    if unknown:
        raise UsageError(f"{notebook}.ipynb: unknown parameter(s) {', '.join(unknown)}; "
                         f"known: {', '.join(spec)} (and the keys of an experiment file)")
    for name in given & set(EXPERIMENT_PARAMETERS) - set(spec):
        kinds = EXPERIMENT_PARAMETERS[name]
        if not isinstance(namespace[name], kinds):
            raise UsageError(f"{notebook}.ipynb: experiment key {name}={namespace[name]!r} "
                             f"has the wrong type")
    for (section, key), target in _FROM_EXPERIMENT.items():
        block = namespace.get(section)
        if isinstance(block, dict) and key in block and target in spec:
            namespace[target] = block[key]
    if "slo_p95_ms" in spec and isinstance(namespace.get("slo_p95_ms"), int):
        namespace["slo_p95_ms"] = float(namespace["slo_p95_ms"])
    for name, kinds in spec.items():
        if name not in namespace:
            raise UsageError(f"{notebook}.ipynb: parameter {name} is missing")
        value = namespace[name]
        wrong = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        if wrong:
            expected = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise UsageError(f"{notebook}.ipynb: parameter {name}={value!r} should be {expected}")


def find_path(path: str | Path) -> Path:
    """A path as given, else relative to the project (notebooks run from notebooks/ or root)."""
    candidate = Path(path)
    if candidate.exists():
        return candidate.resolve()
    text = str(path)
    while text.startswith("../"):
        text = text[3:]
    rooted = PROJECT_ROOT / text
    if rooted.exists():
        return rooted
    raise RunStoreError(f"not found: {path} (also looked in {rooted})", path=path)


def open_run(ref: str | Path, runs_dir: str | Path = "data/runs") -> Run:
    try:
        return load_run(find_path(ref))
    except RunStoreError:
        return load_run(ref, runs_path(runs_dir))


@dataclass
class ReportData:
    title: str
    comparison: Comparison
    achievement: dict[str, Any]
    probe: Comparison | None = None


def load_report(baseline_run: str | Path, candidate_run: str | Path, *, title: str,
                slo_p95_ms: float = 400.0, slo_success: float = 0.99, min_successes: int = 30,
                unit_cost: float | None = None, interview_value: str | None = None,
                salary_target: str | None = None, completion_date: str | None = None,
                probe_baseline_run: str | Path | None = None,
                probe_candidate_run: str | Path | None = None,
                runs_dir: str | Path = "data/runs",
                comparison_file: str | Path | None = None) -> ReportData:
    """The report's comparison: read from ``comparison_file`` (the comparison.json that
    ``loadproof report`` wrote for these runs) when given, with the achievement.json it wrote
    beside it, else computed from the runs."""
    slo = Slo(slo_p95_ms, slo_success, min_successes)
    achievement = None
    if comparison_file is not None:
        from .handoff import read_achievement, read_comparison

        comparison = read_comparison(find_path(comparison_file))
        for role, ref, run in (("baseline_run", baseline_run, comparison.baseline),
                               ("candidate_run", candidate_run, comparison.candidate)):
            if open_run(ref, runs_dir).run_id != run.run_id:
                raise UsageError(f"comparison_file {comparison_file} compares run "
                                 f"{run.run_id} as the {role.removesuffix('_run')}, not "
                                 f"{role}={ref}")
        achievement = read_achievement(find_path(comparison_file), comparison)
    else:
        comparison = compare_runs(open_run(baseline_run, runs_dir),
                                  open_run(candidate_run, runs_dir), slo=slo)
    probe = None
    if probe_baseline_run and probe_candidate_run:
        probe = compare_runs(open_run(probe_baseline_run, runs_dir),
                             open_run(probe_candidate_run, runs_dir), slo=slo)
    options = AchievementOptions(title=title, unit_cost=unit_cost,
                                 interview_value=interview_value, salary_target=salary_target,
                                 completion_date=completion_date)
    return ReportData(title, comparison, achievement or build_achievement(comparison, options),
                      probe)


def _table(frame: pd.DataFrame) -> str:
    return str(frame.to_html(index=False, classes="lpt", border=0, na_rep="—",
                             float_format=lambda v: f"{v:,.2f}"))


def _wrap(body: str) -> Any:
    from IPython.display import HTML

    return HTML(f'<div class="lp">{body}</div>')


def header(report: ReportData) -> Any:
    c = report.comparison
    cards = []
    for key, label in (("latency_improvement", "p95 latency"),
                       ("capacity_increase", "capacity under SLO"),
                       ("success_rate_improvement", "success rate"),
                       ("throughput_improvement", "goodput"),
                       ("cost_savings", "cost")):
        value = report.achievement["metrics"].get(key)
        record = report.achievement["measurements"].get(key, {})
        if value is None:
            reason = report.achievement["omitted"].get(key, "not measured")
            cards.append(f'<div class="card"><div class="v flat">—</div><div class="k">{label}'
                         f'</div><div class="ci">not claimed: {html.escape(reason[:140])}</div>'
                         "</div>")
            continue
        verdict = record.get("verdict", "")
        css = "" if verdict in ("improved", "derived") else (
            "bad" if verdict in ("regressed", "trade-off") else "flat")
        ci = record.get("ci95")
        scope = ("within this run only" if "within this run only" in record.get("note", "")
                 else "between repeats")
        ci_text = (f"95% interval {ci[0]:.2f}–{ci[1]:.2f}, {scope}" if ci
                   else "no interval (a load level)")
        shown = value.split(" (")[0] if key != "cost_savings" else value
        cards.append(f'<div class="card"><div class="v {css}">{html.escape(shown)}</div>'
                     f'<div class="k">{label}: {html.escape(verdict)}</div>'
                     f'<div class="ci">{ci_text}</div></div>')
    body = (REPORT_CSS + f"<h1>{html.escape(report.title)}</h1>"
            f'<div class="sub"><b>{html.escape(c.candidate.label)}</b> against '
            f"<b>{html.escape(c.baseline.label)}</b>, measured with k6. Runs "
            f"<code>{c.baseline.run_id}</code> and <code>{c.candidate.run_id}</code>. Ratios "
            "above 1 favour the candidate.</div>"
            f'<div class="cards">{"".join(cards)}</div>'
            f"<p>{html.escape(report.achievement['summary'])}</p>")
    return _wrap(body)


def dashboard(report: ReportData) -> Any:
    return _wrap(_table(summary.dashboard_frame(report.comparison)))


def stage_results(report: ReportData) -> Any:
    c = report.comparison
    blocks = []
    for role, run, metrics in (("Before", c.baseline, c.baseline_metrics),
                               ("After", c.candidate, c.candidate_metrics)):
        lines = "\n".join(summary.stage_line(m, c.capacity.slo.min_successes) for m in metrics)
        blocks.append(f"<b>{role} ({html.escape(run.label)})</b>"
                      f'<pre class="stages">{html.escape(lines)}</pre>')
    return _wrap("".join(blocks) + _table(summary.stage_frame(c)))


def ratios(report: ReportData) -> Any:
    return _wrap(_table(summary.ratio_frame(report.comparison)))


def capacity(report: ReportData) -> Any:
    from .capacity import trace_rows

    parts = []
    for name, comp in (("Stage plan", report.comparison), ("Arrival-rate probe", report.probe)):
        if comp is None:
            continue
        cap = comp.capacity
        if cap.basis == "search":
            name = "Capacity search"
        rows = [{"arm": f"{role}: {run.label}", "capacity": arm.shown(),
                 "knee": arm.knee_level or "—",
                 "knee reason": arm.knee_reason or "—"}
                for role, run, arm in (("baseline", comp.baseline, cap.baseline),
                                       ("candidate", comp.candidate, cap.candidate))]
        verdict = f" ({cap.verdict})" if cap.ratio is not None else ""
        # the report's comparison already carries the searches' capacity (loadproof report
        # puts it there): its table is shown once, above
        if not (comp is report.probe and report.comparison.capacity.basis == "search"):
            parts.append(f"<h4>{name} ({cap.model}): capacity ratio "
                         f"{html.escape(cap.ratio_text() + verdict)}</h4>"
                         + _table(pd.DataFrame(rows)))
        for role, run in (("baseline", comp.baseline), ("candidate", comp.candidate)):
            if trace := trace_rows(run):  # a capacity-search run: its trials in order
                parts.append(f"<h5>Search trace, {role}: {html.escape(run.label)}</h5>"
                             + _table(pd.DataFrame(trace)))
    return _wrap("".join(parts))


def caveats(report: ReportData) -> Any:
    notes = summary.caveats(report.comparison)
    if report.probe is not None:
        notes += [f"probe: {n}" for n in summary.caveats(report.probe)]
    for run in (report.comparison.baseline, report.comparison.candidate):
        notes += [f"{run.label}: k6 threshold {line}" for line in threshold_lines(run.stages)]
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes) or "<li>none raised</li>"
    return _wrap(f'<ul class="caveats">{items}</ul>')


def talking_points(report: ReportData) -> Any:
    points = summary.talking_points(report.comparison)
    body = "".join(f"<blockquote>{html.escape(p)}</blockquote>" for p in points)
    return _wrap(body or "<p>No measured figure supports a talking point.</p>")


def resilience(report: ReportData) -> Any:
    """Faulted stages: timeline, figures and talking points (runner/resilience_report.py)."""
    from .resilience_report import section

    return _wrap(section(report.comparison))


def integrity(report: ReportData) -> Any:
    """Measurement integrity: the CPU of k6, the target and the rest per measured stage, and
    the generator guard's verdict."""
    rows = summary.integrity_rows(report.comparison)
    if not rows:
        return _wrap("<p>These runs recorded no measurement conditions (imported, or made "
                     "before loadproof recorded them).</p>")
    return _wrap(_table(pd.DataFrame(rows)))


def cpu_over_time(report: ReportData) -> Any:
    """k6's and the target's CPU over time, both arms (the integrity section's chart)."""
    from .integrity import cpu_over_time as draw
    from .integrity import has_timeline

    if not has_timeline(report.comparison):
        return _wrap("<p>No CPU timeline: these runs recorded none (imported, or made before "
                     "loadproof sampled resources).</p>")
    drawn = draw(report.comparison)
    return figure(drawn.figure, drawn.alt)


def methodology(report: ReportData) -> Any:
    c = report.comparison
    rows = pd.DataFrame(summary.methodology_rows(c)).set_index("arm").T.reset_index()
    rows = rows.rename(columns={"index": ""})
    settings = summary.settings_frame(c)
    body = _table(rows)
    if not settings.empty:
        body += "<h4>Service settings per arm</h4>" + _table(settings)
    body += f"<p>{html.escape(summary.METHOD_TEXT)}</p>"
    return _wrap(body)


def figure(fig: Any, alt: str) -> Any:
    """A matplotlib figure as an embedded PNG (the same in Jupyter, HTML and PDF); ``alt`` goes
    into the output's metadata, where the HTML export writes it as the image's alt text."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="png", alt=alt)


def chart(report: ReportData, name: str, *, probe: bool = False) -> Any:
    comp = report.probe if probe else report.comparison
    if comp is None:
        from IPython.display import HTML

        return HTML("<p><i>No arrival-rate probe in this report.</i></p>")
    drawn = charts.ALL_CHARTS[name](comp)
    return figure(drawn.figure, drawn.alt)


def arm_chart(run: Run, name: str) -> Any:
    """A chart of one run on its own (latency_vs_load, throughput_vs_load, outcome_shares)."""
    drawn = charts.ALL_CHARTS[name](compare_runs(run, run))
    return figure(drawn.figure, drawn.alt)


def run_table(run_ref: str | Path, runs_dir: str | Path = "data/runs") -> pd.DataFrame:
    run = open_run(run_ref, runs_dir)
    return metrics_table(stage_metrics(run)).to_pandas()


def runs_path(runs_dir: str | Path) -> Path:
    """The run store a notebook names: as given when it exists from the kernel's folder, else
    relative to the project (papermill runs notebooks from the project root, JupyterLab from
    notebooks/; ``data/runs`` means the same store from both)."""
    path = Path(runs_dir)
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


def runs_table(runs_dir: str | Path = "data/runs") -> pd.DataFrame:
    """The stored runs, newest first: the listing of ``loadproof runs`` as a table."""
    from .listing import list_entries, plan_text

    rows = []
    for e in list_entries(runs_path(runs_dir)):
        if e.stages_completed is None:
            stages = "-"
        elif e.stages_total is not None:
            stages = f"{e.stages_completed}/{e.stages_total}"
        else:
            stages = str(e.stages_completed)
        rows.append({"run id": e.run_id, "label": e.label or "-", "status": e.status,
                     "target / profile": f"profile {e.profile}" if e.profile else (e.target or "-"),
                     "plan": plan_text(e.plan), "stages": stages,
                     "requests": f"{e.requests:,}" if e.requests is not None else "-",
                     "started (UTC)": (e.started_at or "-").split(".")[0].rstrip("Z").replace("T", " "),
                     "problem": e.problem or ""})
    return pd.DataFrame(rows, columns=["run id", "label", "status", "target / profile", "plan",
                                       "stages", "requests", "started (UTC)", "problem"])


def stored_runs(runs_dir: str | Path = "data/runs") -> Any:
    """The runs to choose from, as a table (a run id, or a run folder's path, is what
    ``baseline_run``/``candidate_run``/``existing_run`` take); a missing or empty store is said
    in words, not raised, so the rest of the notebook still runs."""
    store = runs_path(runs_dir)
    try:
        frame = runs_table(store)
    except RunStoreError as exc:
        return _wrap(f"<p>No stored runs to list: {html.escape(str(exc))}</p>")
    if frame.empty:
        return _wrap(f"<p>The run store {html.escape(str(store))} holds no runs yet "
                     "(<code>loadproof run</code> and <code>loadproof import</code> add them).</p>")
    return _wrap(f"<p>Stored runs in {html.escape(str(store))}, newest first (the listing of "
                 "<code>loadproof runs</code>):</p>" + _table(frame))


def run_live(plan: Any, **options: Any) -> Run:
    """``run_stages`` from a notebook cell: progress drawn in the cell as it runs; the kernel's
    interrupt button stops it as Ctrl-C stops ``loadproof run`` (k6 stopped gracefully, the
    service stopped, finished stages kept, the run marked incomplete), and the kept run is
    returned so the cells below still show its finished stages."""
    from IPython.display import HTML, display

    from .execute import Interrupted, run_stages
    from .progress import CellProgress

    progress = CellProgress()
    try:
        return run_stages(plan, progress=progress, **options)
    except Interrupted as stopped:
        finished = sum(1 for s in stopped.run.stages if s.get("status") == "complete")
        progress.line(f"interrupted: {finished} finished stage(s) kept in {stopped.run.path} "
                      f"(status: {stopped.run.status})")
        display(HTML(f"<p><b>Interrupted.</b> Run <code>{html.escape(stopped.run.run_id)}"
                     f"</code> is stored as <b>{html.escape(stopped.run.status)}</b> with "
                     f"{finished} finished stage(s); the cells below show them.</p>"))
        return stopped.run
