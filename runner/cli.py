"""The ``loadproof`` command: parse options, validate, then call the same functions the
notebooks call. Only LoadproofError is caught; it prints ``error: ...`` and exits with the
error's documented code:

    0 success   1 unexpected failure   2 usage or experiment-file mistake   3 k6 missing
    4 target unreachable / service failed to start   5 run store (missing or corrupt run,
    unknown import format)   6 runs not comparable / achievement invalid   7 a report
    notebook failed   8 ``compare --fail-on``: a claim it gates (regressed, ...)
    130 interrupted (finished stages are kept)   141 output closed early (e.g. piped into head)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LoadproofError, UsageError

if TYPE_CHECKING:
    from .achievements import AchievementOptions
    from .compare import Comparison, Slo


DEFAULT_STAGES = "10,50,100,150"


def cmd_serve(args: argparse.Namespace) -> int:
    from loadproof.orchestrator.__main__ import run_serve

    return run_serve(args)


def cmd_run(args: argparse.Namespace) -> int:
    from .execute import run_stages
    from .plan import make_plan

    plan = make_plan(args.stages or DEFAULT_STAGES, model=args.model,
                     stage_duration=args.stage_duration, warmup=args.warmup, repeat=args.repeat)
    overrides = {}
    if args.set:
        if args.profile is None:
            raise UsageError("--set changes the reference service's settings: use it with "
                             "--profile")
        from loadproof.orchestrator.__main__ import parse_set
        from loadproof.orchestrator.settings import ProfileError

        try:
            overrides = parse_set(args.set)
        except ProfileError as exc:
            raise UsageError(str(exc)) from exc
    from .faults import parse_fault_arg

    fault_specs = [parse_fault_arg(text) for text in args.fault]
    run = run_stages(plan, label=args.label, target=args.target, profile=args.profile,
                     script=args.script, out_dir=args.out, keep_raw=args.keep_raw,
                     service_overrides=overrides, plan_mode=args.plan,
                     stages_given=args.stages is not None,
                     override_script_options=args.override_script_options,
                     generators=args.generators,
                     server=server_options(args),
                     fault_specs=fault_specs, raw_output=args.raw_output)
    print(run.path)
    return 0 if run.status == "complete" else 1


def server_options(args: argparse.Namespace) -> dict[str, object]:
    """--prometheus, --prometheus-requests/-latency, --prometheus-rw and --target-pid."""
    from .promscrape import check_options

    return check_options(args)


def add_integrity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", default=None, metavar="URL",
                        help="the target's Prometheus metrics, scraped around each stage's "
                             "measured window (with --profile: its /metrics)")
    parser.add_argument("--prometheus-requests", default=None, metavar="METRIC",
                        help="the server's request counter (default "
                             "http_request_duration_seconds_count)")
    parser.add_argument("--prometheus-latency", default=None, metavar="METRIC",
                        help="the server's latency histogram (default "
                             "http_request_duration_seconds)")
    parser.add_argument("--prometheus-rw", default=None, metavar="URL",
                        help="send k6's metrics to this Prometheus remote-write endpoint")
    parser.add_argument("--target-pid", type=int, default=None, metavar="PID",
                        help="sample the CPU and memory of this process (and its children): "
                             "a --target loadproof did not start")


def cmd_capacity(args: argparse.Namespace) -> int:
    import json

    from .capacity import make_settings, render_text, run_capacity_search

    settings = make_settings(slo_p95_ms=args.slo_p95_ms, slo_success=args.slo_success,
                             model=args.model, min_rate=args.min_rate, max_rate=args.max_rate,
                             precision=args.precision, trial_duration=args.trial_duration,
                             warmup=args.warmup, cooldown=args.cooldown, confirm=args.confirm,
                             budget=args.budget)
    result = run_capacity_search(settings, label=args.label, target=args.target,
                                 profile=args.profile, script=args.script, out_dir=args.out,
                                 generators=args.generators)
    print(json.dumps(result.to_dict(), indent=2) if args.format == "json"
          else render_text(result))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import import_files

    levels = None
    if args.stages is not None:
        try:
            levels = [int(v) for v in args.stages.split(",")]
        except ValueError:
            levels = []
        if not levels or min(levels) < 1:
            raise UsageError(f"--stages {args.stages!r}: give positive whole numbers, one per "
                             "file, e.g. --stages 10,50,100")
    if args.shards:
        from .importer import import_shards

        if levels is not None or args.stage_by is not None:
            raise UsageError("--shards merges the files into one stage: it takes neither "
                             "--stages nor --stage-by")
        run = import_shards(args.files, label=args.label, out_dir=args.out)
        for warning in run.manifest.get("warnings") or []:
            print(f"warning: {warning}", file=sys.stderr)
        print(run.path)
        return 0
    run = import_files(args.files, label=args.label, out_dir=args.out, levels=levels,
                       stage_by=args.stage_by)
    print(run.path)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .listing import entries_json, entries_table, list_entries

    entries = list_entries(Path(args.out))
    if args.format == "json":
        print(entries_json(entries))
    elif entries:
        print(entries_table(entries))
    else:
        print(f"no runs in {args.out}", file=sys.stderr)
    return 0


def _slo(args: argparse.Namespace) -> Slo:
    from .compare import Slo

    if args.slo_p95_ms <= 0:
        raise UsageError("--slo-p95-ms must be above 0")
    if not 0 < args.slo_success <= 1:
        raise UsageError("--slo-success is a share between 0 and 1, e.g. 0.99")
    if args.min_successes < 1:
        raise UsageError("--min-successes must be at least 1")
    return Slo(args.slo_p95_ms, args.slo_success, args.min_successes)


def _compare(args: argparse.Namespace) -> Comparison:
    from .compare import compare_runs
    from .store import load_run

    runs_dir = Path(args.runs_dir)
    return compare_runs(load_run(args.baseline, runs_dir), load_run(args.candidate, runs_dir),
                        slo=_slo(args))


def _return_freed_memory(after_ms: int = 0) -> None:
    """polars' allocator (jemalloc) keeps freed pages for seconds by default; a comparison
    frees each stage's columns as it makes arrays of them, so it would hold both. Freed pages
    go back after ``after_ms``. Only before polars loads, and a setting already made wins."""
    import os

    if "polars" not in sys.modules:
        os.environ.setdefault("_RJEM_MALLOC_CONF",
                              f"dirty_decay_ms:{after_ms},muzzy_decay_ms:0")


def cmd_compare(args: argparse.Namespace) -> int:
    _return_freed_memory()
    from .gate import GATE_EXIT, failure_lines, gate, junit_xml, markdown_table, parse_fail_on
    from .render import comparison_json, comparison_table

    fail_on = parse_fail_on(args.fail_on) if args.fail_on is not None else frozenset()
    comparison = _compare(args)
    for warning in comparison.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    results = gate(comparison, fail_on)
    if args.format == "junit":
        print(junit_xml(comparison, results))
    elif args.format == "markdown":
        print(markdown_table(comparison, results))
    else:
        print(comparison_json(comparison) if args.format == "json"
              else comparison_table(comparison))
    failures = failure_lines(results)
    for line in failures:
        print(line, file=sys.stderr)
    return GATE_EXIT if failures else 0


def _achievement_options(args: argparse.Namespace) -> AchievementOptions:
    from .achievements import AchievementOptions

    if args.unit_cost is not None and args.unit_cost <= 0:
        raise UsageError("--unit-cost must be above 0")
    return AchievementOptions(title=args.title, achievement_type=args.achievement_type,
                              interview_value=args.interview_value,
                              salary_target=args.salary_target,
                              completion_date=args.completion_date, unit_cost=args.unit_cost,
                              currency=args.currency,
                              extra_technologies=list(args.technology or []))


def cmd_achievement(args: argparse.Namespace) -> int:
    from .achievements import build_achievement, update_feed, write_achievement
    from .site import build_site

    comparison = _compare(args)
    record = build_achievement(comparison, _achievement_options(args))
    reports_dir = Path(args.reports_dir or "reports")
    out = Path(args.out) if args.out else reports_dir / "achievements" / \
        f"{comparison.comparison_id}.json"
    write_achievement(record, out)
    update_feed(record, reports_dir / "feed.json")
    build_site(reports_dir)
    print(out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    # the report reads the requests again after its comparison (the endpoint rows and chart
    # inputs of both runs at once): pages freed by one read are reused by the next within
    # 0.3 s, and go back after that (10 M requests per arm: peak 1,380 MiB against 1,554 with
    # jemalloc's 10 s default, at the same wall time within the rounds' noise; bench/scale.py)
    _return_freed_memory(after_ms=300)
    from .report import load_pair, make_report

    probe = None
    if (args.probe_baseline is None) != (args.probe_candidate is None):
        raise UsageError("give both --probe-baseline and --probe-candidate, or neither")
    if args.probe_baseline is not None:
        probe = load_pair(args.probe_baseline, args.probe_candidate, Path(args.runs_dir))
    # with --out DIR and no --reports-dir, everything the report writes (feed.json too) goes
    # under DIR, never into a reports/ folder of the current directory
    reports_dir = Path(args.reports_dir or args.out or "reports")
    out = make_report(args.baseline, args.candidate, out_dir=args.out, slo=_slo(args),
                      options=_achievement_options(args), runs_dir=Path(args.runs_dir),
                      reports_dir=reports_dir, formats=args.formats, probe=probe)
    print(out)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    out = run_pipeline(args.experiment, reports_dir=Path(args.reports_dir),
                       runs_dir=Path(args.out))
    print(out)
    return 0


def cmd_k8s_render(args: argparse.Namespace) -> int:
    from .k8s import K8sSettings, next_steps, render
    from .plan import make_plan

    plan = make_plan(args.stages, model=args.model, stage_duration=args.stage_duration,
                     warmup=args.warmup)
    settings = K8sSettings(target=args.target, plan=plan, generators=args.generators,
                           script=args.script, pvc=args.pvc, prefix=args.name,
                           namespace=args.namespace)
    written = render(settings, Path(args.out))
    print(next_steps(settings, written), file=sys.stderr)
    for path in written:
        print(path)
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from .site import build_site

    print(build_site(Path(args.reports_dir)))
    return 0


def _add_compare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE_RUN", help="run folder or run id")
    parser.add_argument("candidate", metavar="CANDIDATE_RUN", help="run folder or run id")
    parser.add_argument("--slo-p95-ms", type=float, default=400.0,
                        help="capacity SLO: p95 latency of successful requests (default 400)")
    parser.add_argument("--slo-success", type=float, default=0.99,
                        help="capacity SLO: share of successful answers (default 0.99)")
    parser.add_argument("--min-successes", type=int, default=30,
                        help="fewest successful requests a stage needs for a latency figure "
                             "(default 30)")
    parser.add_argument("--runs-dir", default="data/runs", help="where run ids are looked up")


def _add_achievement_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--title", default=None)
    parser.add_argument("--achievement-type", default="performance_optimization")
    parser.add_argument("--interview-value", default=None)
    parser.add_argument("--salary-target", default=None)
    parser.add_argument("--completion-date", default=None, help="YYYY-MM-DD (default today)")
    parser.add_argument("--unit-cost", type=float, default=None,
                        help="cost of one instance-month; enables cost_savings from capacity")
    parser.add_argument("--currency", default="$")
    parser.add_argument("--technology", action="append", default=[], metavar="NAME",
                        help="the measured target's stack, one name per flag (e.g. --technology "
                             "Go --technology Redis); listed in the achievement")
    parser.add_argument("--reports-dir", default=None,
                        help="where feed.json lives (default reports; for report with --out "
                             "DIR, DIR)")


def _add_generators_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generators", type=int, default=1, metavar="N",
                        help="split each stage over N k6 processes (execution segments), "
                             "started together; figures come from all their requests")


def build_parser() -> argparse.ArgumentParser:
    from loadproof.orchestrator.__main__ import add_serve_arguments

    parser = argparse.ArgumentParser(prog="loadproof", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="start the reference service (embedded PostgreSQL)")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="run a stage plan with k6 and store the run")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="base URL of any HTTP service")
    where.add_argument("--profile", help="start the reference service: baseline, optimized "
                                         "or a profile .toml")
    run.add_argument("--label", required=True, help="the arm's name, e.g. baseline")
    run.add_argument("--stages", default=None,
                     help=f"comma-separated load levels (default {DEFAULT_STAGES})")
    run.add_argument("--model", default="vus", choices=["vus", "rate"],
                     help="vus: closed model (virtual users); rate: open model (requests/s)")
    run.add_argument("--stage-duration", default="30s", help="measured time per stage")
    run.add_argument("--warmup", default="0s", help="warm-up per stage, kept out of the figures")
    run.add_argument("--script", default="journey",
                     help="quick, journey, submit, or a path to your k6 script")
    run.add_argument("--repeat", type=int, default=1, help="run the whole plan N times")
    run.add_argument("--out", default="data/runs", help="run store folder")
    run.add_argument("--plan", default="auto", choices=["auto", "stages", "script"],
                     help="who drives the load: stages (loadproof's --stages), script (your "
                          "script as written, one stage per scenario or options.stages step), "
                          "auto (script when your script shapes its own load and no --stages "
                          "is given)")
    run.add_argument("--override-script-options", action="store_true",
                     help="let loadproof's stages replace your script's own stages, scenarios, "
                          "vus, duration or iterations (refused otherwise)")
    run.add_argument("--keep-raw", action="store_true", help="keep k6's raw CSV per stage")
    run.add_argument("--raw-output", default="csv.gz", choices=["csv.gz", "csv"],
                     help="k6's per-request CSV while a stage runs: csv.gz (compressed as k6 "
                          "writes it, a few %% of the disk) or csv (k6's plain file)")
    _add_generators_arg(run)
    add_integrity_arguments(run)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one setting of the reference service's profile "
                          "(with --profile), e.g. --set pool_pre_ping=false")
    run.add_argument("--fault", action="append", default=[], metavar="SPEC",
                     help="inject a fault in a stage of every repeat (repeatable): "
                          "name=N,stage=2,at=5s,duration=8s,action=db-outage|db-freeze, or "
                          "start=CMD,stop=CMD[,timeout=30s] instead of action")
    run.set_defaults(func=cmd_run)

    cap = sub.add_parser("capacity", help="search the highest load that meets an SLO")
    where = cap.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="base URL of any HTTP service")
    where.add_argument("--profile", help="start the reference service: baseline, optimized "
                                         "or a profile .toml")
    cap.add_argument("--label", required=True, help="the arm's name, e.g. baseline")
    cap.add_argument("--slo-p95-ms", type=float, required=True,
                     help="SLO: p95 latency of successful requests, in ms")
    cap.add_argument("--slo-success", type=float, required=True,
                     help="SLO: share of 2xx answers, e.g. 0.99")
    cap.add_argument("--model", default="rate", choices=["rate", "vus"],
                     help="rate: arrival rate in requests/s (default); vus: virtual users")
    cap.add_argument("--min-rate", type=int, default=None,
                     help="first load tried (default 10 req/s, or 1 user)")
    cap.add_argument("--max-rate", type=int, default=None,
                     help="highest load tried (default 20000 req/s, or 2000 users)")
    cap.add_argument("--precision", type=float, default=0.05,
                     help="stop bisecting when (fail - pass) / pass is at most this")
    cap.add_argument("--trial-duration", default="10s", help="measured time per trial")
    cap.add_argument("--warmup", default="2s", help="warm-up per trial, kept out of the figures")
    cap.add_argument("--cooldown", default="2s", help="pause between trials")
    cap.add_argument("--confirm", type=int, default=1,
                     help="times the highest passing load is re-tried (default 1)")
    cap.add_argument("--budget", default="10m", help="stop with the bracket found by then")
    cap.add_argument("--script", default=None,
                     help="quick (default with --target), submit (default with --profile), "
                          "journey, or a path to your k6 script")
    cap.add_argument("--out", default="data/runs", help="run store folder")
    cap.add_argument("--format", choices=["text", "json"], default="text")
    _add_generators_arg(cap)
    cap.set_defaults(func=cmd_capacity)

    imp = sub.add_parser("import", help="store existing outputs of k6, JMeter, hey, vegeta, "
                         "Gatling (3.0-3.12) or Locust as a run")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--label", required=True)
    imp.add_argument("--out", default="data/runs")
    imp.add_argument("--stages", default=None, metavar="LEVELS",
                     help="the load level of each file, in order (e.g. 10,50,100): each level "
                          "is a stage, files of the same level its repeats")
    imp.add_argument("--stage-by", default=None, choices=["allThreads", "grpThreads"],
                     help="JMeter JTL: one stage per plateau of active threads (each level's "
                          "longest unbroken run of samples); each file a repeat")
    imp.add_argument("--shards", action="store_true",
                     help="the files are raw outputs of the same stage from several k6 "
                          "generators: merge them into one stage with a shard column")
    imp.set_defaults(func=cmd_import)

    runs = sub.add_parser("runs", help="list the stored runs, newest first, with any problem")
    runs.add_argument("--out", default="data/runs", help="run store folder (default data/runs)")
    runs.add_argument("--format", choices=["table", "json"], default="table")
    runs.set_defaults(func=cmd_runs)

    cmp_ = sub.add_parser("compare", help="compare two runs stage by stage")
    _add_compare_args(cmp_)
    cmp_.add_argument("--format", choices=["table", "json", "junit", "markdown"],
                      default="table", help="junit: JUnit XML, one test case per stage x "
                      "metric; markdown: a table for a CI job summary")
    cmp_.add_argument("--fail-on", default=None, metavar="CLAIMS",
                      help="exit 8 when any stage x metric claim is one of these "
                           "(comma-separated: regressed, trade-off, not-replicated)")
    cmp_.set_defaults(func=cmd_compare)

    ach = sub.add_parser("achievement", help="write the achievement JSON and update the feed")
    _add_compare_args(ach)
    _add_achievement_args(ach)
    ach.add_argument("--out", default=None, help="achievement file (default "
                                                 "reports/achievements/<comparison>.json)")
    ach.set_defaults(func=cmd_achievement)

    rep = sub.add_parser("report", help="HTML/PDF/Markdown report from two stored runs")
    _add_compare_args(rep)
    _add_achievement_args(rep)
    rep.add_argument("--out", default=None, help="output folder (default "
                                                 "reports/<candidate>-vs-<baseline>/<timestamp>)")
    rep.add_argument("--probe-baseline", default=None, metavar="RUN",
                     help="an arrival-rate probe run of the baseline, for capacity and knee")
    rep.add_argument("--probe-candidate", default=None, metavar="RUN")
    rep.add_argument("--formats", default="html,pdf,md",
                     help="which of html,pdf,md to write (default all)")
    rep.set_defaults(func=cmd_report)

    pipe = sub.add_parser("pipeline", help="run an experiment end to end and report it")
    pipe.add_argument("experiment", nargs="?", default=None, metavar="EXPERIMENT.yaml",
                      help="experiment file (default: the shipped default experiment)")
    pipe.add_argument("--reports-dir", default="reports")
    pipe.add_argument("--out", default="data/runs", help="run store folder")
    pipe.set_defaults(func=cmd_pipeline)

    k8s = sub.add_parser("k8s", help="Kubernetes: k6-operator manifests for a stage plan")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True, metavar="ACTION")
    render = k8s_sub.add_parser("render", help="write a ConfigMap and a k6-operator TestRun per "
                                               "stage, raw outputs to a volume")
    render.add_argument("--target", required=True, help="base URL the runner pods load")
    render.add_argument("--model", default="rate", choices=["rate", "vus"],
                        help="rate: arrival rate in requests/s (default); vus: virtual users")
    render.add_argument("--stages", required=True, help="comma-separated load levels")
    render.add_argument("--stage-duration", default="30s", help="measured time per stage")
    render.add_argument("--warmup", default="0s", help="warm-up per stage, kept out of the "
                                                       "figures")
    render.add_argument("--script", default="quick",
                        help="quick (default), journey, submit, or a path to your k6 script "
                             "(one self-contained file)")
    render.add_argument("--out", default="k8s", help="folder for the manifests (default k8s)")
    render.add_argument("--pvc", default="loadproof-results",
                        help="the PersistentVolumeClaim the runners write their raw output to")
    render.add_argument("--name", default="loadproof",
                        help="prefix of the ConfigMap and TestRun names (default loadproof)")
    render.add_argument("--namespace", default=None, help="namespace of every manifest")
    _add_generators_arg(render)
    render.set_defaults(func=cmd_k8s_render)

    site = sub.add_parser("site", help="write reports/index.html, a page of every achievement "
                                       "in reports/feed.json")
    site.add_argument("--reports-dir", default="reports",
                      help="folder of feed.json and the reports (default reports)")
    site.set_defaults(func=cmd_site)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except LoadproofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`loadproof runs | head`): no traceback; the shell's SIGPIPE code
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
