"""``compare --fail-on``: the CI gate exits 8 on a gated claim, and only on a claim."""

from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from loadproof.cli import main
from loadproof.compare import CLAIM_METRICS

from .helpers import make_repeated_run
from .test_compare import repeats

KEY = "s1-10vus"


def _pair(root: Path, slower: float, count: int = 3) -> tuple[str, str]:
    rng = np.random.default_rng(11)
    base = make_repeated_run(root, "base", {KEY: (10, repeats(rng, 90, 110, count=count))})
    cand = make_repeated_run(root, "cand", {KEY: (10, repeats(rng, 90 * slower, 110 * slower,
                                                              count=count))})
    return str(base.path), str(cand.path)


def _compare(*args: str) -> list[str]:
    return ["compare", *args, "--runs-dir", "unused"]


def test_a_claimed_regression_fails_the_gate(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = _pair(tmp_path, slower=1.6)
    assert main(_compare(base, cand, "--fail-on", "regressed")) == 8
    err = capsys.readouterr().err
    assert f"gate failed: {KEY} latency_p95_ms: regressed" in err
    # the same comparison passes a gate on other claims, and without --fail-on
    assert main(_compare(base, cand, "--fail-on", "trade-off")) == 0
    assert main(_compare(base, cand)) == 0
    assert "gate failed" not in capsys.readouterr().err


def test_no_change_passes_and_one_repeat_is_not_replicated(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    base, cand = _pair(tmp_path / "same", slower=1.0)
    assert main(_compare(base, cand, "--fail-on", "regressed,trade-off")) == 0
    base, cand = _pair(tmp_path / "once", slower=1.6, count=1)
    # slower, but one repeat per arm is a measurement, not a claim: no regression to gate
    assert main(_compare(base, cand, "--fail-on", "regressed")) == 0
    capsys.readouterr()
    assert main(_compare(base, cand, "--fail-on", "not-replicated")) == 8
    assert f"gate failed: {KEY} latency_p95_ms: not replicated" in capsys.readouterr().err


def test_junit_and_markdown_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = _pair(tmp_path, slower=1.6)
    assert main(_compare(base, cand, "--format", "junit", "--fail-on", "regressed")) == 8
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert {c.get("name") for c in cases} == set(CLAIM_METRICS)
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert "latency_p95_ms" in failed and suite.get("failures") == str(len(failed))
    assert main(_compare(base, cand, "--format", "markdown", "--fail-on", "regressed")) == 8
    out = capsys.readouterr().out
    assert "| stage | metric |" in out and "**failed**" in out
    assert f"{len(failed)} of {len(cases)} gated checks failed." in out


def test_unknown_fail_on_word_is_a_usage_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = _pair(tmp_path, slower=1.0, count=1)
    assert main(_compare(base, cand, "--fail-on", "slower")) == 2
    assert "--fail-on: slower" in capsys.readouterr().err
