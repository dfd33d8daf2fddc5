"""The portfolio page (reports/index.html) from a real feed: the shipped sample runs reported
twice, once beside an HTML report and PDF and once as Markdown only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from loadproof.achievements import AchievementOptions
from loadproof.progress import Progress
from loadproof.report import make_report
from loadproof.site import build_site, find_report_files, report_files_for

from .conftest import SAMPLE

TITLE_ONE = "Orchestrator <script>alert('x')</script> & co"
TITLE_TWO = "Probe: open model"


VOID = {"meta", "link", "br", "img", "input", "hr"}


class Page(HTMLParser):
    """Every tag with its attributes, and per card: title, figures, verdicts, links, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cards: list[dict[str, Any]] = []
        self._open: list[tuple[str, list[str], dict[str, str | None], list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        classes = (attributes.get("class") or "").split()
        if tag == "li" and "card" in classes:
            self.cards.append({"title": "", "values": [], "verdicts": [], "intervals": [],
                               "links": {}, "text": ""})
        if tag not in VOID:
            self._open.append((tag, classes, attributes, []))

    def handle_data(self, data: str) -> None:
        for *_, buffer in self._open:
            buffer.append(data)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, classes, attributes, buffer = self._open.pop()
            if name == tag:
                break
        text = "".join(buffer)
        if tag == "li" and "card" in classes:
            self.cards[-1]["text"] = text
            return
        if not any(name == "li" and "card" in c for name, c, *_ in self._open):
            return  # outside the cards
        card = self.cards[-1]
        if tag == "h2":
            card["title"] = text
        elif tag == "span" and classes:
            key = {"v": "values", "verdict": "verdicts", "ci": "intervals"}.get(classes[0])
            if key:
                card[key].append(text)
        elif tag == "a":
            card["links"][text] = attributes["href"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory,
            sample_report: tuple[Path, Path, str]) -> Path:
    """A reports folder with two achievements made by `report` (which refreshes the page).

    The first folder's HTML report and PDF are the session's shared sample report
    (tests/conftest.py), copied in: the page only links them, and executing the report
    notebook again would only repeat what test_report.py checks. Its achievement, Markdown
    and feed item are this fixture's own, made by `report` with the title TITLE_ONE."""
    _, sample_out, log = sample_report
    assert log.endswith("exit 0"), log[-3000:]
    reports_dir = tmp_path_factory.mktemp("site") / "reports"
    one = reports_dir / "one" / "run"
    one.mkdir(parents=True)
    for name in ("report.html", "report.pdf"):
        shutil.copy(sample_out / name, one / name)
    quiet = Progress(quiet=True)
    make_report(SAMPLE / "baseline", SAMPLE / "optimized", out_dir=one,
                reports_dir=reports_dir, options=AchievementOptions(title=TITLE_ONE),
                formats="md", progress=quiet)
    make_report(SAMPLE / "probe-baseline", SAMPLE / "probe-optimized",
                out_dir=reports_dir / "two" / "run", reports_dir=reports_dir,
                options=AchievementOptions(title=TITLE_TWO, unit_cost=100.0), formats="md",
                progress=quiet)
    return reports_dir


def _page(reports: Path) -> tuple[str, Page]:
    text = (reports / "index.html").read_text(encoding="utf-8")
    return text, Page(text)


def test_report_writes_a_card_per_achievement(reports: Path) -> None:
    _, page = _page(reports)
    feed = json.loads((reports / "feed.json").read_text())
    assert len(feed["items"]) == 2 and len(page.cards) == 2
    assert sorted(card["title"] for card in page.cards) == sorted([TITLE_ONE, TITLE_TWO])
    for item, card in zip(feed["items"], page.cards, strict=True):  # the feed's order
        record = item["_loadproof"]
        assert card["title"] == record["title"]
        shown = [record["metrics"][key].split(" (")[0].split(" per ")[0]
                 for key in ("latency_improvement", "capacity_increase",
                             "success_rate_improvement", "throughput_improvement",
                             "cost_savings") if key in record["metrics"]]
        assert card["values"] == shown
        measured = [m for key, m in record["measurements"].items()]
        assert sorted(card["verdicts"]) == sorted(m["verdict"] for m in measured)
        for m in measured:
            if m["ci95"]:
                ci = f"95% CI {m['ci95'][0]:.2f}–{m['ci95'][1]:.2f}"
                assert any(shown.startswith(ci) for shown in card["intervals"]), ci
        text = card["text"]
        for m in measured:  # the verdict's reasons, once per card, after the interval's scope
            reasons = m.get("note", "").removeprefix("95% interval ").partition("; ")[2]
            assert reasons in text
        for reason in record["omitted"].values():
            assert reason in text
        for caveat in record["caveats"]:
            assert caveat in text


def test_links_are_relative_and_point_to_files_that_exist(reports: Path) -> None:
    _, page = _page(reports)
    by_title = {card["title"]: card["links"] for card in page.cards}
    assert set(by_title[TITLE_ONE]) == {"HTML report", "PDF", "Markdown", "Achievement JSON"}
    assert set(by_title[TITLE_TWO]) == {"Markdown", "Achievement JSON"}  # --formats md
    for links in by_title.values():
        for href in links.values():
            assert not href.startswith(("/", "http:", "https:", "file:"))
            assert (reports / unquote(href)).is_file(), href
    assert by_title[TITLE_ONE]["HTML report"] == "one/run/report.html"
    text = next(c for c in page.cards if c["title"] == TITLE_TWO)["text"]
    assert "No report under" in text


def test_feed_is_the_alternate_link_and_nothing_is_fetched(reports: Path) -> None:
    text, page = _page(reports)
    assert ("link", {"rel": "alternate", "type": "application/feed+json", "href": "feed.json",
                     "title": "loadproof achievements"}) in page.tags
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) \
        in page.tags
    assert not [tag for tag, _ in page.tags if tag in ("script", "iframe", "img", "object")]
    for tag, attributes in page.tags:
        for name in ("src", "href", "srcset", "action"):
            value = attributes.get(name) or ""
            assert "//" not in value, (tag, value)
        assert not any(name.startswith("on") for name in attributes)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    csp = next(a["content"] for t, a in page.tags if a.get("http-equiv") ==
               "Content-Security-Policy")
    assert csp is not None and csp.startswith("default-src 'none'")


def test_user_text_is_escaped(reports: Path) -> None:
    text, _ = _page(reports)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in text
    assert "<script>" not in text


def test_a_card_links_the_folder_that_made_its_feed_item(reports: Path,
                                                        tmp_path: Path) -> None:
    """The same comparison reported twice: the folder whose achievement the feed holds, else
    the newest one."""
    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    for name, generated_at in (("older", "2000-01-01T00:00:00.000Z"),
                               ("newer", "2999-01-01T00:00:00.000Z")):
        shutil.copytree(copy / "one" / "run", copy / "one" / name)
        record = json.loads((copy / "one" / name / "achievement.json").read_text())
        record["generated_at"] = generated_at
        (copy / "one" / name / "achievement.json").write_text(json.dumps(record))
    feed = json.loads((copy / "feed.json").read_text())
    found = find_report_files(copy)
    folders = [report_files_for(item["_loadproof"], found).folder for item in feed["items"]]
    assert sorted(str(f.relative_to(copy)) for f in folders if f) == ["one/run", "two/run"]
    record = next(i["_loadproof"] for i in feed["items"] if i["title"] == TITLE_ONE)
    record["generated_at"] = "1999-01-01T00:00:00.000Z"  # no folder holds this one
    assert report_files_for(record, found).folder == copy / "one" / "newer"


def loadproof(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadproof.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_site_verb_rewrites_the_page(reports: Path, tmp_path: Path) -> None:
    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    (copy / "index.html").unlink()
    result = loadproof("site", "--reports-dir", str(copy))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(copy / "index.html")
    assert (copy / "index.html").read_text().count('<li class="card"') == 2
    result = loadproof("site", cwd=tmp_path)  # the default --reports-dir is ./reports
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reports/index.html"


@pytest.mark.parametrize("content, message", [
    (None, "achievement feed not found"),
    ('{"version": "https://jsonfeed.org/version/1.1", "items": [', "not valid JSON"),
    ('{"version": "https://jsonfeed.org/version/1.1", "items": {}}', "'items' should be a list"),
    ('{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "a"}]}',
     "item 1 (a) has no '_loadproof' achievement"),
    ('["not a feed"]', "is not a JSON Feed"),
])
def test_a_missing_or_corrupt_feed_is_a_run_store_error(tmp_path: Path, content: str | None,
                                                        message: str) -> None:
    feed = tmp_path / "feed.json"
    if content is not None:
        feed.write_text(content)
    result = loadproof("site", "--reports-dir", str(tmp_path))
    assert result.returncode == 5
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert str(feed) in result.stderr and message in result.stderr
    assert not (tmp_path / "index.html").exists()


def test_an_empty_feed_says_so(tmp_path: Path) -> None:
    (tmp_path / "feed.json").write_text('{"version": "https://jsonfeed.org/version/1.1", '
                                        '"title": "t", "items": []}')
    page = build_site(tmp_path).read_text()
    assert "No achievements yet" in page and '<li class="card"' not in page


def test_the_achievement_verb_refreshes_the_page(tmp_path: Path) -> None:
    result = loadproof("achievement", str(SAMPLE / "baseline"), str(SAMPLE / "optimized"),
                       "--reports-dir", str(tmp_path), "--title", "Only the record")
    assert result.returncode == 0, result.stderr
    page = Page((tmp_path / "index.html").read_text())
    assert [card["title"] for card in page.cards] == ["Only the record"]
    href = page.cards[0]["links"]["Achievement JSON"]
    assert href.startswith("achievements/cmp-") and (tmp_path / href) == Path(result.stdout.strip())
