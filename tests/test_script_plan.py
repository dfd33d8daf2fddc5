"""Script-driven plans from a script's options (as ``k6 inspect`` prints them), and reading
thresholds and hosts from k6's outputs."""

from __future__ import annotations

from loadproof.execute import _same_endpoint
from loadproof.outcome import aborted_on, host_port, threshold_results
from loadproof.plan import SCRIPT_MODEL, StagePlan, script_plan


def test_one_stage_per_scenario_in_start_order() -> None:
    plan = script_plan({"scenarios": {
        "spike": {"executor": "ramping-arrival-rate", "startRate": 5, "timeUnit": "1m",
                  "stages": [{"duration": "30s", "target": 600}, {"duration": "1m", "target": 60}],
                  "startTime": "1m"},
        "browse": {"executor": "constant-vus", "vus": 3, "duration": "1m", "exec": "browse"},
        "once": {"executor": "shared-iterations", "vus": 2, "iterations": 10,
                 "startTime": "2m30s"},
    }})
    assert plan.model == SCRIPT_MODEL
    assert [(s.key, s.level, s.model, s.duration_s) for s in plan.stages] == [
        ("s1-browse", 3, "vus", 60.0),
        ("s2-spike", 10, "rate", 90.0),  # 600 per minute at its peak
        ("s3-once", 2, "vus", 0.0),  # ended by iterations, not time
    ]
    assert plan.stages[0].source == {"scenario": "browse", "executor": "constant-vus", "vus": 3,
                                     "duration": "1m", "exec": "browse"}


def test_one_stage_per_options_stages_step_and_round_trip() -> None:
    plan = script_plan({"stages": [{"duration": "30s", "target": 20},
                                   {"duration": "1m30s", "target": 20},
                                   {"duration": "20s", "target": 0}]}, repeat=2)
    assert [s.key for s in plan.stages] == ["s1-20vus", "s2-20vus", "s3-0vus"]
    assert plan.stages[0].source == {"step": 1, "from_vus": 0, "to_vus": 20,
                                     "duration": "30s"}
    again = StagePlan.from_dict(plan.to_dict())
    assert again.same_shape(plan) and again.repeat == 2
    longer = script_plan({"stages": [{"duration": "40s", "target": 20},
                                     {"duration": "1m30s", "target": 20},
                                     {"duration": "20s", "target": 0}]})
    assert not longer.same_shape(plan)


def test_a_script_shaped_by_vus_and_duration_is_one_stage() -> None:
    (stage,) = script_plan({"vus": 5, "duration": "3s"}).stages
    assert (stage.key, stage.level, stage.duration_s) == ("s1-default", 5, 3.0)


def test_thresholds_from_both_summary_formats() -> None:
    declared = {"http_req_failed": [{"threshold": "rate<0.01", "abortOnFail": True}]}
    export = {"metrics": {"http_req_failed": {"value": 1, "thresholds": {"rate<0.01": True}},
                          "http_req_duration": {"thresholds": {"p(95)<500": False}}}}
    assert threshold_results(export, declared) == [
        {"metric": "http_req_failed", "threshold": "rate<0.01", "ok": False,
         "abort_on_fail": True},
        {"metric": "http_req_duration", "threshold": "p(95)<500", "ok": True,
         "abort_on_fail": False}]
    handle_summary = {"metrics": {"checks": {"values": {"rate": 1.0},
                                             "thresholds": {"rate>0.9": {"ok": True}}}}}
    assert threshold_results(handle_summary)[0]["ok"] is True


def test_abort_message_and_hosts() -> None:
    log = ('time="2026-11-27T14:40:17Z" level=error msg="thresholds on metrics '
           "'http_req_failed, checks' were crossed; at least one has abortOnFail enabled, "
           'stopping test prematurely"')
    assert aborted_on(log) == ["http_req_failed", "checks"]
    assert aborted_on('level=error msg="thresholds on metrics \'x\' have been crossed"') is None
    assert host_port("https://example.com/path") == "example.com:443"
    assert host_port("http://127.0.0.1:8080/x?y=1") == "127.0.0.1:8080"
    assert _same_endpoint("localhost:8080", "127.0.0.1:8080")
    assert not _same_endpoint("localhost:8081", "127.0.0.1:8080")
