"""Reports: execute report.ipynb with papermill, export HTML (code hidden) and PDF
(WeasyPrint, no LaTeX, no browser), write the Markdown summary and the achievement."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import aggregate
from .achievements import AchievementOptions, build_achievement, update_feed, write_achievement
from .compare import Comparison, Slo, compare_runs
from .compare_child import compare_in_child
from .endpoints import endpoint_rows, rows_to_json
from .errors import ReportError, RunStoreError, UsageError
from .progress import Progress
from .site import build_site
from .store import PROJECT_ROOT, Run, load_run, slug, utcnow

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
FORMATS = ("html", "pdf", "md")


def notebook_path(name: str) -> Path:
    path = NOTEBOOKS_DIR / f"{name}.ipynb"
    if not path.is_file():
        raise ReportError(f"notebook {path} is missing; loadproof needs its notebooks/ folder "
                          "(install from a checkout with 'make install')", path=path)
    return path


def load_pair(baseline: str | Path, candidate: str | Path, runs_dir: Path) -> tuple[Run, Run]:
    """Both runs, or one error that names every run that could not be opened."""
    runs: list[Run] = []
    problems = []
    for role, ref in (("baseline", baseline), ("candidate", candidate)):
        try:
            runs.append(load_run(ref, runs_dir))
        except RunStoreError as exc:
            problems.append(f"{role} {ref}: {exc}")
    if problems:
        raise RunStoreError("cannot make the report: " + "; ".join(problems))
    return runs[0], runs[1]


def execute_notebook(name: str, out_path: Path, parameters: dict[str, Any],
                     kernel: WarmKernel | None = None) -> Path:
    """Run a notebook with papermill (on ``kernel`` when given, else on a kernel of its own);
    on failure keep the executed copy and name the cell."""
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    source = notebook_path(name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if kernel is not None:
            papermill.execute_notebook(str(source), str(out_path), parameters=parameters,
                                       kernel_name="python3", progress_bar=False,
                                       log_output=False, km=kernel.manager)
        else:
            with _kernel_stderr_to(out_path.with_suffix(".kernel.log")):
                papermill.execute_notebook(str(source), str(out_path), parameters=parameters,
                                           kernel_name="python3", progress_bar=False,
                                           cwd=str(PROJECT_ROOT), log_output=False,
                                           config=kernel_manager_config())
    except papermill.PapermillExecutionError as exc:
        raise ReportError(f"notebook {source.name} failed in cell {exc.exec_count} "
                          f"({exc.ename}: {exc.evalue}); the executed copy with the error is "
                          f"kept at {out_path}", path=out_path, cell=exc.exec_count) from exc
    except Exception as exc:  # kernel missing, papermill cannot start
        raise ReportError(f"could not execute {source.name}: {exc.__class__.__name__}: {exc} "
                          "(run 'make install' to register the python3 kernel)",
                          path=out_path) from exc
    return out_path


def kernel_manager_config() -> Any:
    """Kernels started with CurveZMQ transport encryption, provisioned by jupyter_client's
    kernel manager (ipykernel's kernelspec declares support): ipykernel warns at each start of
    a kernel that talks plain TCP, and this is what its warning asks for. ``make lab`` passes
    the same setting to JupyterLab."""
    import zmq
    from traitlets.config import Config

    policy = "auto" if zmq.has("curve") else "disabled"  # pyzmq's wheels carry libsodium
    return Config({"KernelManager": {"transport_encryption": policy}})


class WarmKernel:
    """A python3 kernel started before its notebook is ready to run, as papermill would start
    it (in the project root, with kernel_manager_config), that imports the notebook module at
    once: its start and imports (some 4 s) overlap the comparison. Its stderr goes to a log
    that ``close`` keeps beside the executed notebook only when it holds something. Always
    closed (the kernel shut down), whatever happens in between."""

    WARM_UP = "from loadproof import notebook as _loadproof_notebook"

    def __init__(self) -> None:
        from jupyter_client.manager import KernelManager

        clients: list[Any] = []

        class _Manager(KernelManager):
            """Keeps every client made for the kernel (papermill's among them: a client of a
            kernel manager it did not start is left open), for close() to stop."""

            def client(self, **kwargs: Any) -> Any:
                made = super().client(**kwargs)
                clients.append(made)
                return made

        self._clients = clients
        # closed in close(), which every path reaches
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="loadproof-kernel-", suffix=".log", delete=False)
        self.manager = _Manager(kernel_name="python3", config=kernel_manager_config())
        try:
            self.manager.start_kernel(cwd=str(PROJECT_ROOT), stderr=self._log)
            self._client = self.manager.client()
            self._client.start_channels()
            # silent: no execution count used, so the notebook's cells number from 1
            self._client.execute(self.WARM_UP, silent=True, store_history=False)
        except Exception as exc:  # kernel missing or cannot start
            self.close(None)
            raise ReportError(f"could not start a python3 kernel: {exc.__class__.__name__}: "
                              f"{exc} (run 'make install' to register it)") from exc

    def close(self, log_to: Path | None) -> None:
        """Shut the kernel down; keep its log at ``log_to`` when it holds something."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                if client.channels_running:
                    client.stop_channels()
        with contextlib.suppress(Exception):  # it may have died already
            if getattr(self, "manager", None) is not None and self.manager.has_kernel:
                self.manager.shutdown_kernel(now=True)
        self._log.close()
        log = Path(self._log.name)
        if log_to is not None and log.read_text(errors="replace").strip():
            shutil.move(log, log_to)
        else:
            log.unlink(missing_ok=True)


@contextlib.contextmanager
def _kernel_stderr_to(log_path: Path) -> Iterator[None]:
    """The kernel inherits our stderr and logs on it (its warnings, a crash); send that to a
    log beside the executed notebook, kept only when it holds something."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path, "wb") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    text = log_path.read_text(errors="replace")
    if not text.strip():
        log_path.unlink()


# JupyterLab's template drops an image's alt text; the charts carry theirs in the output's
# metadata (IPython's Image(alt=...)), and this writes it onto the <img>.
_ALT_TEXT_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block data_png scoped %}
{%- set alt = output | get_metadata('alt', 'image/png') -%}
{%- if alt -%}
{{ super() | replace('<img ', '<img alt="' ~ (alt | escape_html) ~ '" ', 1) }}
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock data_png %}
"""


def experiment_title(baseline: Run, candidate: Run) -> str | None:
    """The title of the experiment file the runs were recorded by (``experiment.yaml`` beside
    the run folders, as ``loadproof pipeline`` leaves a store), when its arms are these runs'
    labels; None otherwise."""
    import yaml

    for folder in dict.fromkeys((baseline.path.parent, candidate.path.parent)):
        path = folder / "experiment.yaml"
        try:
            data = yaml.safe_load(path.read_text()) if path.is_file() else None
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("title"), str):
            continue
        arms = {str(a) for a in (data.get("arms") or {})}
        labels = {baseline.label.removeprefix("probe-"), candidate.label.removeprefix("probe-")}
        if labels <= arms:
            return str(data["title"])
    return None


def _document_metadata(page: str, title: str) -> str:
    """<title> from the experiment, and the description (the first screen's sentence) and
    generator in <meta> tags: WeasyPrint writes them into the PDF's metadata."""
    import html as html_lib
    import re

    lead = re.search(r"<p class=['\"]lead['\"]>(.*?)</p>", page, re.S)
    description = html_lib.unescape(re.sub(r"<[^>]+>", "", lead.group(1))) if lead else ""
    meta = (f'<meta name="description" content="{html_lib.escape(description, quote=True)}">'
            '<meta name="generator" content="loadproof">'
            '<meta name="keywords" content="load test, k6, before/after, latency">')
    page = re.sub(r"<title>.*?</title>", f"<title>{html_lib.escape(title)}</title>", page,
                  count=1, flags=re.S)
    return page.replace("</title>", "</title>" + meta, 1)


def export_html(executed: Path, out_path: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    exporter = HTMLExporter(template_name="lab")
    # cells tagged "explore" help a person choose runs by hand; they are not part of a report
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={"explore"}),
                                   enabled=True)
    exporter.raw_template = _ALT_TEXT_TEMPLATE
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    notebook = nbformat.read(executed, as_version=4)
    title = str(((notebook.metadata.get("papermill") or {}).get("parameters") or {})
                .get("title") or "loadproof report")
    notebook.metadata["title"] = title
    body, _ = exporter.from_notebook_node(notebook)
    out_path.write_text(_document_metadata(body, title), encoding="utf-8")
    return out_path


def export_pdf(html_path: Path, out_path: Path) -> Path:
    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    weasyprint.HTML(filename=str(html_path)).write_pdf(str(out_path))
    return out_path


def default_out_dir(reports_dir: Path, baseline: Run, candidate: Run) -> Path:
    name = f"{slug(candidate.label)}-vs-{slug(baseline.label)}"
    return reports_dir / name / f"{utcnow():%Y%m%dT%H%M%SZ}"


def parse_formats(text: str | list[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = [f.strip().lower() for f in items if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"--formats {text!r}: choose from {', '.join(FORMATS)}")
    return formats


def make_report(baseline: str | Path, candidate: str | Path, *, out_dir: str | Path | None = None,
                slo: Slo | None = None, options: AchievementOptions | None = None,
                runs_dir: Path = Path("data/runs"), reports_dir: Path = Path("reports"),
                formats: str | list[str] = "html,pdf,md", title: str | None = None,
                probe: tuple[Run, Run] | None = None, progress: Progress | None = None) -> Path:
    """All report files for two stored runs, in ``out_dir``; returns the folder."""
    progress = progress or Progress()
    wanted = parse_formats(formats)
    slo = slo or Slo()
    options = options or AchievementOptions()
    base, cand = load_pair(baseline, candidate, runs_dir)
    # the notebook's kernel starts now, to be ready when the comparison is
    kernel = WarmKernel() if "html" in wanted or "pdf" in wanted else None
    out = Path(out_dir) if out_dir else default_out_dir(reports_dir, base, cand)
    try:
        _make_report(base, cand, out, slo, options, runs_dir, reports_dir, wanted, title, probe,
                     progress, kernel)
    finally:
        if kernel is not None:
            kernel.close(out / "report.kernel.log" if out.is_dir() else None)
    progress.line(f"report: portfolio page {build_site(reports_dir)}")
    progress.line(f"report: {out}")
    return out


def _make_report(base: Run, cand: Run, out: Path, slo: Slo, options: AchievementOptions,
                 runs_dir: Path, reports_dir: Path, wanted: list[str], title: str | None,
                 probe: tuple[Run, Run] | None, progress: Progress,
                 kernel: WarmKernel | None) -> None:
    progress.line(f"report: comparing {base.run_id} and {cand.run_id}")
    # in a process of its own, whose memory all goes back when it ends (compare_child.py):
    # this one then reads the requests again with its memory free for it
    comparison = compare_in_child(base, cand, slo)
    title = title or options.title or experiment_title(base, cand) or \
        f"{cand.label} vs {base.label}"
    options.title = options.title or title
    out.mkdir(parents=True, exist_ok=True)
    if probe is not None:
        from .capacity import search_capacity

        searched = search_capacity(*probe)
        if searched is not None:  # capacity searches say more than the stage plan's grid
            comparison = dataclasses.replace(comparison, capacity=searched)
    achievement = build_achievement(comparison, options)
    write_achievement(achievement, out / "achievement.json")
    update_feed(achievement, reports_dir / "feed.json")
    # what every format shows, made once from the requests: the notebook reads it back from
    # comparison.json instead of reading every request again
    progress.line("report: per-endpoint figures and chart inputs")
    rows = endpoint_rows(comparison)
    handed = {**comparison.to_dict(), "endpoints": rows_to_json(rows),
              "chart_inputs": chart_inputs(comparison)}
    comparison_path = out / "comparison.json"
    comparison_path.write_text(json.dumps(handed, indent=2, default=_json_default),
                               encoding="utf-8")
    notebook: _Background | None = None
    if "html" in wanted or "pdf" in wanted:
        progress.line("report: executing notebooks/report.ipynb")
        parameters: dict[str, Any] = {
            "baseline_run": str(base.path.resolve()), "candidate_run": str(cand.path.resolve()),
            "probe_baseline_run": str(probe[0].path.resolve()) if probe else None,
            "probe_candidate_run": str(probe[1].path.resolve()) if probe else None,
            "title": title, "slo_p95_ms": slo.p95_ms, "slo_success": slo.success,
            "min_successes": slo.min_successes, "unit_cost": options.unit_cost,
            "interview_value": options.interview_value, "salary_target": options.salary_target,
            "completion_date": options.completion_date, "runs_dir": str(runs_dir.resolve()),
            "comparison_file": str(comparison_path.resolve()),
        }
        # the notebook runs in its own kernel while this process writes the Markdown (and
        # loads the exporters, which wait for the notebook)
        notebook = _Background(lambda: _html_and_pdf(out, parameters, wanted, progress,
                                                      kernel))
        threading.Thread(target=_load_exporters, args=("pdf" in wanted,), daemon=True).start()
    try:
        if "md" in wanted:
            from .reportview import report_markdown

            probe_comparison = compare_runs(*probe, slo=slo) if probe else None
            (out / "report.md").write_text(report_markdown(comparison, achievement, title,
                                                           probe_comparison), encoding="utf-8")
    finally:
        if notebook is not None:
            notebook.join()


def chart_inputs(comparison: Comparison) -> list[dict[str, Any]]:
    """The charts' aggregated inputs of both runs (latency over time, the headline stage's
    latency histogram), made here once, for the notebook's kernel."""

    def make(run: Run) -> None:
        if run.usable_stages():
            aggregate.quantiles_over_time(run)
        if comparison.headline_stage is not None:
            aggregate.latency_histogram(run, comparison.headline_stage)

    # the two runs side by side, one whole-run read at a time (aggregate.READS): one run's
    # read overlaps the other's sorting. Measured at 10 M requests per arm, the report's peak
    # and wall time: 1,339-1,447 MiB, 17.7-20.7 s with both reads at once; 917-970 MiB,
    # 18.3-21.4 s one run after the other; 1,137-1,199 MiB, 15.1-16.1 s so.
    # a run compared with itself is read, and handed over, once
    runs = tuple({run.path.resolve(): run for run in (comparison.baseline,
                                                      comparison.candidate)}.values())
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(make, runs))
    return aggregate.kept_to_json([key for run in runs for key in aggregate.chart_keys(
        run, comparison.headline_stage)])


def _load_exporters(pdf: bool) -> None:
    """Import nbconvert's exporter (and WeasyPrint) ahead of their use: some 1.5 s of imports
    out of the way while the notebook runs."""
    with contextlib.suppress(Exception):  # the real import, later, reports any failure
        import nbconvert  # noqa: F401

        if pdf:
            import weasyprint  # noqa: F401


def _html_and_pdf(out: Path, parameters: dict[str, Any], wanted: list[str],
                  progress: Progress, kernel: WarmKernel | None) -> None:
    executed = execute_notebook("report", out / "report.ipynb", parameters, kernel)
    html_path = export_html(executed, out / "report.html")
    if "pdf" in wanted:
        progress.line("report: writing PDF")
        export_pdf(html_path, out / "report.pdf")
    if "html" not in wanted:
        html_path.unlink()


class _Background:
    """A function run in a thread; ``join`` waits for it and raises what it raised."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to join(), in the caller's thread
            self._error = exc

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _json_default(obj: Any) -> Any:
    return list(obj) if isinstance(obj, tuple) else str(obj)
