"""``loadproof pipeline``: run every arm (interleaved when repeated), the capacity probe,
compare, and write the report folder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from . import conditions
from .achievements import AchievementOptions
from .compare import Slo
from .execute import Interrupted, RunSession
from .experiment import Arm, Experiment, load_experiment
from .faults import FaultSpec
from .plan import StagePlan
from .progress import Progress
from .report import execute_notebook, make_report, notebook_path
from .store import Run, slug, utcnow


def _sessions(experiment: Experiment, plan: StagePlan, script: str, prefix: str,
              runs_dir: Path, progress: Progress) -> list[ArmSession]:
    faults = experiment.faults if plan is experiment.plan else []  # not the probe's
    return [_session(arm, plan, script, prefix, runs_dir, progress, experiment.generators,
                     faults)
            for arm in (experiment.baseline, experiment.candidate)]


def _searches(experiment: Experiment, runs_dir: Path, progress: Progress) -> list[ArmSession]:
    from .capacity import CapacitySearchSession

    assert experiment.capacity is not None
    return [CapacitySearchSession(experiment.capacity, label=f"capacity-{arm.name}",
                                  target=arm.target, profile=arm.profile,
                                  script=experiment.capacity_script, out_dir=runs_dir,
                                  progress=progress, service_overrides=dict(arm.overrides),
                                  generators=experiment.generators)
            for arm in (experiment.baseline, experiment.candidate)]


def _session(arm: Arm, plan: StagePlan, script: str, prefix: str, runs_dir: Path,
             progress: Progress, generators: int = 1,
             faults: list[FaultSpec] | None = None) -> RunSession:
    return RunSession(plan=plan, label=f"{prefix}{arm.name}", target=arm.target,
                      profile=arm.profile, script=script, out_dir=runs_dir, progress=progress,
                      service_overrides=dict(arm.overrides), generators=generators,
                      fault_specs=list(faults or []))


class ArmSession(Protocol):
    """What run_arms needs of an arm: a RunSession (stages) or a CapacitySearchSession."""

    @property
    def label(self) -> str: ...

    @property
    def run(self) -> Run | None: ...

    def open(self) -> Run: ...

    def run_repeat(self, repeat: int) -> None: ...

    def stop_service(self) -> dict[str, Any] | None: ...

    def close(self, status: str | None = None, reason: str | None = None) -> Run: ...


def arm_order(repeat: int, arms: int) -> list[int]:
    """ABBA: repeat 1 runs the arms in order, repeat 2 in reverse, and so on, so that neither
    arm always goes first and a linear drift of the machine cancels over pairs of repeats."""
    order = list(range(arms))
    return order if repeat % 2 == 1 else order[::-1]


def run_arms(sessions: list[ArmSession], repeat: int, progress: Progress) -> list[Run]:
    """Run every arm's repeats interleaved in ABBA order, each arm alone on the machine: its
    service (and database) start for its repeat and stop after it, and the next arm waits
    until they have exited and the machine is quiet. Every wait is recorded in the runs."""
    opened: list[ArmSession] = []
    try:
        for session in sessions:
            session.open()
            opened.append(session)
    except BaseException as exc:
        for session in opened:  # no run is left marked "running"
            session.close("failed", f"another arm could not start: {exc}")
        raise
    try:
        for number in range(1, repeat + 1):
            order = arm_order(number, len(sessions))
            labels = [sessions[i].label for i in order]
            for position, index in enumerate(order, start=1):
                session = sessions[index]
                assert session.run is not None
                quiet = conditions.wait_quiet()
                if not quiet["quiet"]:
                    progress.line(f"pipeline: the machine is still busy "
                                  f"({quiet['machine_cpu_cores']:.2f} cores) after "
                                  f"{quiet['waited_s']:.0f} s; measuring anyway (recorded)")
                progress.line(f"pipeline: arm {session.label}, repeat {number}/{repeat} "
                              f"({position} of {len(order)} this round)")
                schedule = {"repeat": number, "position": position, "order": labels,
                            "quiet_before": quiet}
                session.run.manifest.setdefault("schedule", []).append(schedule)
                session.run_repeat(number)
                stopped = session.stop_service()
                if stopped is not None:
                    schedule["service_stopped"] = stopped
                session.run.save()
    except KeyboardInterrupt:
        runs = [s.close("incomplete", "interrupted (Ctrl-C)") for s in sessions]
        raise Interrupted(runs[0]) from None
    except BaseException as exc:
        for session in sessions:
            session.close("failed", f"{exc.__class__.__name__}: {exc}")
        raise
    return [session.close() for session in sessions]


def arm_notebooks(out: Path, runs: list[Run], progress: Progress) -> list[Path]:
    """Beside the executed report notebook, an executed ``load_test`` notebook per arm that
    views its stored run (parameters, table, charts): a reader re-runs it from the folder."""
    written = []
    for run in runs:
        progress.line(f"pipeline: executing notebooks/load_test.ipynb for {run.label}")
        written.append(execute_notebook(
            "load_test", out / f"load_test-{slug(run.label)}.ipynb",
            {"run_now": False, "existing_run": str(run.path.resolve()), "label": run.label}))
    return written


def run_pipeline(experiment_path: str | Path | None = None, *,
                 reports_dir: Path = Path("reports"), runs_dir: Path = Path("data/runs"),
                 progress: Progress | None = None) -> Path:
    progress = progress or Progress()
    experiment = load_experiment(experiment_path)
    notebook_path("report")  # fail before any load if the notebooks are missing
    started = time.monotonic()
    progress.line(f"pipeline: {experiment.title} ({experiment.path})")
    base, cand = run_arms(_sessions(experiment, experiment.plan, experiment.script, "",
                                    runs_dir, progress), experiment.plan.repeat, progress)
    for line in experiment.deprecations:
        progress.line(f"warning: {line}")
    probe: tuple[Run, Run] | None = None
    if experiment.capacity is not None:
        progress.line(f"pipeline: capacity search per arm ({experiment.capacity_repeat} "
                      f"searches each, interleaved)")
        probe_base, probe_cand = run_arms(
            _searches(experiment, runs_dir, progress), experiment.capacity_repeat, progress)
        probe = (probe_base, probe_cand)
    elif experiment.probe_plan is not None:
        progress.line("pipeline: arrival-rate capacity probe")
        probe_base, probe_cand = run_arms(
            _sessions(experiment, experiment.probe_plan, experiment.probe_script, "probe-",
                      runs_dir, progress), experiment.probe_plan.repeat, progress)
        probe = (probe_base, probe_cand)
    slo = Slo(float(experiment.slo.get("p95_ms", 400.0)),
              float(experiment.slo.get("success", 0.99)),
              int(experiment.slo.get("min_successes", 30)))
    report = experiment.report
    options = AchievementOptions(
        title=experiment.title,
        achievement_type=str(report.get("achievement_type") or "performance_optimization"),
        interview_value=report.get("interview_value"), salary_target=report.get("salary_target"),
        completion_date=report.get("completion_date"), unit_cost=report.get("unit_cost"),
        currency=str(report.get("currency") or "$"),
        extra_technologies=list(report.get("stack") or []))
    out = reports_dir / slug(experiment.name) / f"{utcnow():%Y%m%dT%H%M%SZ}"
    progress.line("pipeline: comparing and writing the report")
    make_report(base.path, cand.path, out_dir=out, slo=slo, options=options,
                runs_dir=runs_dir, reports_dir=reports_dir, title=experiment.title,
                probe=probe, progress=progress)
    shutil.copy(experiment.path, out / "experiment.yaml")
    arm_notebooks(out, [base, cand], progress)
    progress.line(f"pipeline: done in {time.monotonic() - started:.0f} s")
    return out
