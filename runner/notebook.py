"""What the notebooks call: load, compare and display. Notebooks hold parameters and calls
only; everything that computes lives in the package (and is tested there)."""

from __future__ import annotations

import html
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import charts, reportview, summary
from .achievements import AchievementOptions, build_achievement
from .compare import Comparison, Slo, compare_runs
from .errors import RunStoreError, UsageError
from .metrics import metrics_table, stage_metrics
from .outcome import threshold_lines
from .reportview import REPORT_CSS
from .store import PROJECT_ROOT, Run, load_run

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
    table = str(frame.to_html(index=False, classes="lpt", border=0, na_rep="—",
                              float_format=lambda v: f"{v:,.2f}"))
    return f'<div class="scroll">{table}</div>'  # a phone scrolls a wide table, header and all


def _wrap(body: str) -> Any:
    from IPython.display import HTML

    return HTML(f'<div class="lp">{body}</div>')


def header(report: ReportData) -> Any:
    """The first screen: the experiment's title, one sentence with the result and its
    trade-offs, the main chart, what changed, the evidence, and a tile per claim made."""
    c = report.comparison
    main = charts.main_latency(c)  # its points and intervals are the comparison's
    changed = reportview.changed_items(c)
    changed_html = ("<ul class='changed'>" + "".join(f"<li>{item}</li>" for item in changed)
                    + "</ul>") if changed else "<p>No recorded setting differs between the two " \
        "versions.</p>"
    body = (REPORT_CSS + f"<h1>{html.escape(report.title)}</h1>"
            f"<p class='lead'>{reportview.headline_sentence(c, report.probe)}</p>"
            + reportview.tiles(report.achievement)
            + _figure_html(main.figure, main.alt, CAPTIONS["main_latency"],
                           _narrow(charts.main_latency, c), "main_latency")
            + f"<p><b>What changed</b> ({html.escape(c.baseline.label)} → "
            f"{html.escape(c.candidate.label)}):</p>{changed_html}"
            f"<p class='evidence'>{reportview.evidence_line(c)}</p>"
            f"<p class='run-ids'>{reportview.runs_line(c)}</p>")
    return _wrap(body)


def results(report: ReportData) -> Any:
    """Every stage's measures before → after, with the change, its interval and the verdict."""
    return _wrap(reportview.results_table(report.comparison))


def endpoints(report: ReportData) -> Any:
    """Per request name and stage: count, success and percentiles before → after."""
    return _wrap(reportview.endpoint_table(report.comparison))


def glossary(report: ReportData) -> Any:
    return _wrap(reportview.glossary())


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

    blocks = []
    for name, comp in (("Stage plan", report.comparison), ("Arrival-rate probe", report.probe)):
        if comp is None:
            continue
        parts: list[str] = []
        blocks.append(parts)
        cap = comp.capacity
        if cap.basis == "search":
            name = "Capacity search"
        unit = " users" if cap.model == "vus" else " req/s"
        rows = [{"version": run.label, f"capacity (p95 ≤ {cap.slo.p95_ms:g} ms, success ≥ "
                 f"{cap.slo.success:.0%})": arm.shown(unit)}
                | ({"knee": f"{arm.knee_level}{unit}: {arm.knee_reason}" if arm.knee_level
                    else (arm.knee_reason or "—")} if cap.model == "rate" else {})
                for run, arm in ((comp.baseline, cap.baseline), (comp.candidate, cap.candidate))]
        model = "closed load, virtual users" if cap.model == "vus" else "open load, arrival rate"
        if comp is report.probe and report.comparison.capacity.basis == "search":
            pass  # the report's comparison already carries the searches' capacity, shown above
        elif cap.ratio is not None:
            parts.append(f"<h4>{name} ({model}): capacity ratio "
                         f"{html.escape(cap.ratio_text() + f' ({cap.verdict})')}</h4>")
        else:
            parts.append(f"<h4>{name} ({model}): no capacity ratio</h4>"
                         f"<p>{html.escape(_sentence(reportview.plain_keys(comp, cap.reason or '')))}"
                         ".</p>")
        if not (comp is report.probe and report.comparison.capacity.basis == "search"):
            parts.append(_table(pd.DataFrame(rows)))
        for role, run in (("baseline", comp.baseline), ("candidate", comp.candidate)):
            if trace := trace_rows(run):  # a capacity-search run: its trials in order
                parts.append(f"<h5>Search trace, {role}: {html.escape(run.label)}</h5>"
                             + _table(pd.DataFrame(trace)))
        if comp is report.probe:  # the probe's chart right under its table, on one page
            parts.append(_chart_html(comp, "latency_vs_load", PROBE_CAPTION))
    # the probe's heading, table and chart stay together on paper
    return _wrap("".join(f"<div class='keep'>{''.join(parts)}</div>" if "<figure>" in
                         "".join(parts) else "".join(parts) for parts in blocks))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def caveats(report: ReportData) -> Any:
    notes = summary.caveats(report.comparison)
    if report.probe is not None:
        notes += [f"probe {n}" for n in reportview.plain_notes(report.probe,
                                                              summary.caveats(report.probe))]
    for run in (report.comparison.baseline, report.comparison.candidate):
        notes += [f"{run.label}: k6 threshold {line}" for line in threshold_lines(run.stages)]
    notes = reportview.plain_notes(report.comparison, notes)
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
    rows = pd.DataFrame([{**r, "arm": r["arm"].split(": ", 1)[-1]} for r in
                         summary.methodology_rows(c)]).set_index("arm").T.reset_index()
    rows = rows.rename(columns={"index": ""})
    rows.columns.name = None  # "arm" would print as a header cell over an empty column
    # each setting as it is written ("1000.0", "True"), as the first screen's list shows it
    settings = summary.settings_frame(c).astype(str)
    body = _table(rows)
    if not settings.empty:
        body += "<h4>Service settings per arm</h4>" + _table(settings)
    body += f"<p>{html.escape(summary.METHOD_TEXT)}</p>"
    return _wrap(body)


CAPTIONS = {
    "main_latency": "Look at the gap between the versions at the highest load and whether each "
                    "p95 stays under the dotted SLO line; shading: 95% interval between a version's "
                    "runs (none for a version measured once).",
    "latency_vs_load": "Where a line bends upward the service starts queueing; the dotted line "
                       "is the SLO.",
    "throughput_vs_load": "A line that flattens while the load rises: the service is saturated.",
    "outcome_shares": "Anything but green is a request that did not succeed.",
    "latency_over_time": "Look for drift or spikes within a stage (each shaded column is one "
                         "stage); a steady band means the stage's figures describe all of it.",
    "latency_ecdf": "Where the curves cross, one version is faster below that latency and "
                    "slower above it.",
}


def _svg(fig: Any) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# how tall a chart may be on paper (REPORT_CSS): the first screen's, a two-panel one, the rest
_PRINT_SIZE = {"main_latency": "main", "latency_over_time": "tall"}


def _figure_html(fig: Any, alt: str, caption: str, narrow: Any = None, name: str = "") -> str:
    """A matplotlib figure as vector SVG in an <img> (the same in the HTML and the PDF), its
    alt text saying what it shows, and a one-line caption saying what to look at. ``narrow``,
    the same chart drawn for a phone's width, is what a screen under 640 px shows."""
    source = (f'<source media="(max-width: 640px)" srcset="{_svg(narrow)}"/>'
              if narrow is not None else "")
    size = f' class="{_PRINT_SIZE[name]}"' if name in _PRINT_SIZE else ""
    return (f'<figure><picture>{source}<img{size} src="{_svg(fig)}" '
            f'alt="{html.escape(alt, quote=True)}"/></picture>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _narrow(draw: Any, comp: Comparison) -> Any:
    """The chart drawn at a phone's width: its text stays legible when scaled to the screen."""
    wide = charts.WIDTH_IN
    charts.WIDTH_IN = charts.PHONE_WIDTH_IN
    try:
        return draw(comp).figure
    finally:
        charts.WIDTH_IN = wide


def figure(fig: Any, alt: str, caption: str = "", narrow: Any = None) -> Any:
    """A chart as a captioned SVG figure."""
    return _wrap(_figure_html(fig, alt, caption, narrow))


PROBE_CAPTION = ("The arrival-rate probe: requests arrive at a set rate whatever the answers; "
                 "where p95 bends upward is the knee.")


def _chart_html(comp: Comparison, name: str, caption: str) -> str:
    drawn = charts.ALL_CHARTS[name](comp)
    return _figure_html(drawn.figure, drawn.alt, caption, _narrow(charts.ALL_CHARTS[name], comp),
                        name)


def chart(report: ReportData, name: str, *, probe: bool = False) -> Any:
    comp = report.probe if probe else report.comparison
    if comp is None:
        from IPython.display import HTML

        return HTML("<p><i>No arrival-rate probe in this report.</i></p>")
    if name == "outcome_shares" and all(m.successes == m.requests for m in
                                        comp.baseline_metrics + comp.candidate_metrics):
        return _wrap("<p>Every request at every stage succeeded in both versions (no 429, no "
                     "error), so there is no outcome chart.</p>")
    return _wrap(_chart_html(comp, name, PROBE_CAPTION if probe else CAPTIONS.get(name, "")))


def arm_chart(run: Run, name: str) -> Any:
    """A chart of one run on its own (latency_vs_load, throughput_vs_load, outcome_shares)."""
    drawn = charts.ALL_CHARTS[name](compare_runs(run, run))
    return figure(drawn.figure, drawn.alt, CAPTIONS.get(name, ""))


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
