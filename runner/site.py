"""The portfolio page: ``reports/index.html``, one card per achievement in ``reports/feed.json``.

The page is static and self-contained: inline CSS, no script, nothing fetched from a network
(a Content-Security-Policy says so to the browser), every text from the feed escaped, and
links relative to the reports folder, so it works opened from disk or served as files."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import RunStoreError
from .store import atomic_write_bytes, iso, read_json, utcnow

FEED_NAME = "feed.json"
INDEX_NAME = "index.html"
# The figures a card leads with, in the report header's order.
HEADLINE = (("latency_improvement", "p95 latency"), ("capacity_increase", "capacity under SLO"),
            ("success_rate_improvement", "success rate"), ("throughput_improvement", "goodput"),
            ("cost_savings", "cost"))
# What a report folder holds, and how a card names each file.
REPORT_FILES = (("report.html", "HTML report"), ("report.pdf", "PDF"), ("report.md", "Markdown"),
                ("achievement.json", "Achievement JSON"))
GOOD_VERDICTS = ("improved", "derived")
INTERVAL_NOTE = "95% interval "  # how an achievement's note states its interval's scope
BAD_VERDICTS = ("regressed", "trade-off")

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --card: #ffffff; --bg: #f6f8fa;
        --good: #0b6e3d; --bad: #b42318; --flat: #59636e; --accent: #0b4f8a; --warn: #7a4b00; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --card: #151b23; --bg: #0d1117;
          --good: #3fb950; --bad: #f85149; --flat: #9198a1; --accent: #58a6ff; --warn: #d29922; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.45;
       font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
a { color: var(--accent); }
header, main, footer { max-width: 76rem; margin: 0 auto; padding: 0 1rem; }
header { padding-top: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem 0; }
header p, footer p { color: var(--muted); margin: .25rem 0; }
.cards { display: grid; gap: 1rem; margin: 1rem auto 2rem auto; list-style: none; padding: 0;
         align-items: start;
         grid-template-columns: repeat(auto-fill, minmax(min(100%, 34rem), 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
        padding: 1rem 1.1rem; display: flex; flex-direction: column; gap: .6rem;
        min-width: 0; overflow-wrap: anywhere; }
.card h2 { font-size: 1.2rem; margin: 0; }
.meta { color: var(--muted); font-size: .85rem; margin: 0; }
.summary { margin: 0; }
.figures { display: grid; gap: .5rem; list-style: none; margin: 0; padding: 0;
           grid-template-columns: repeat(auto-fill, minmax(8.5rem, 1fr)); }
.figure { border: 1px solid var(--line); border-radius: 8px; padding: .5rem .65rem; }
.figure .v { display: block; font-size: 1.45rem; font-weight: 700; color: var(--good); }
.figure.bad .v { color: var(--bad); }
.figure.flat .v { color: var(--flat); }
.figure .k { display: block; font-size: .85rem; }
.figure .verdict { font-weight: 600; }
.figure .ci, .figure .detail { display: block; font-size: .78rem; color: var(--muted); }
h3 { font-size: .9rem; margin: .2rem 0 0 0; text-transform: uppercase; letter-spacing: .04em;
     color: var(--muted); }
ul.caveats, ul.omitted, ul.notes { margin: 0; padding-left: 1.2rem; font-size: .9rem; }
ul.caveats li { color: var(--warn); }
ul.omitted li, ul.notes li { color: var(--muted); }
.links { display: flex; flex-wrap: wrap; gap: .5rem; margin: .2rem 0 0 0; padding: 0;
         list-style: none; }
.links a { display: inline-block; padding: .35rem .7rem; border: 1px solid var(--line);
           border-radius: 6px; text-decoration: none; font-size: .9rem; }
.links a:hover, .links a:focus { border-color: var(--accent); }
.missing { color: var(--muted); font-size: .85rem; margin: 0; }
.tech { color: var(--muted); font-size: .8rem; margin: 0; }
footer { padding-bottom: 2rem; font-size: .85rem; }
code { font-size: .85em; }
"""


@dataclass
class ReportFiles:
    """Where one achievement's files are: name -> path (only files that exist)."""

    folder: Path | None
    files: dict[str, Path]


def read_feed(feed_path: Path) -> dict[str, Any]:
    """The JSON Feed of achievements, checked for what the page reads (RunStoreError names the
    file and the item when something is missing or of the wrong type)."""
    if not feed_path.is_file():
        raise RunStoreError(f"achievement feed not found: {feed_path} ('loadproof report' or "
                            "'loadproof pipeline' writes it; --reports-dir names its folder)",
                            path=feed_path)
    feed = read_json(feed_path, what="achievement feed")
    if not isinstance(feed, dict) or not str(feed.get("version", "")).startswith(
            "https://jsonfeed.org/version/1"):
        raise RunStoreError(f"{feed_path} is not a JSON Feed (no 'version' "
                            "https://jsonfeed.org/version/1.1); move it aside", path=feed_path)
    items = feed.get("items")
    if not isinstance(items, list):
        raise RunStoreError(f"{feed_path}: 'items' should be a list", path=feed_path)
    for number, item in enumerate(items, start=1):
        where = f"{feed_path}: item {number}"
        if not isinstance(item, dict):
            raise RunStoreError(f"{where} is not an object", path=feed_path)
        record = item.get("_loadproof")
        where += f" ({item.get('id', 'no id')})"
        if not isinstance(record, dict):
            raise RunStoreError(f"{where} has no '_loadproof' achievement", path=feed_path)
        for key, kind, what in (("title", str, "text"), ("comparison_id", str, "text"),
                                ("metrics", dict, "an object"),
                                ("measurements", dict, "an object"),
                                ("omitted", dict, "an object"), ("caveats", list, "a list")):
            if not isinstance(record.get(key), kind):
                raise RunStoreError(f"{where}: '_loadproof.{key}' should be {what}",
                                    path=feed_path)
    return feed


def find_report_files(reports_dir: Path) -> dict[str, list[tuple[str, Path]]]:
    """comparison id -> [(generated_at, achievement file)] for every achievement stored under
    ``reports_dir``: report folders (achievement.json) and ``achievements/*.json``. Files that
    are not readable achievements are passed over: the feed, not they, lists what exists."""
    found: dict[str, list[tuple[str, Path]]] = {}
    candidates = list(reports_dir.rglob("achievement.json"))
    if (reports_dir / "achievements").is_dir():
        candidates += sorted((reports_dir / "achievements").glob("*.json"))
    for path in candidates:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("comparison_id"), str):
            found.setdefault(record["comparison_id"], []).append(
                (str(record.get("generated_at") or ""), path))
    return found


def report_files_for(record: dict[str, Any], found: dict[str, list[tuple[str, Path]]]) \
        -> ReportFiles:
    """The files of this feed record: the folder whose achievement was generated with it, else
    the newest one stored for the same comparison."""
    stored = found.get(record["comparison_id"], [])
    if not stored:
        return ReportFiles(None, {})
    same = [p for generated, p in stored if generated == record.get("generated_at")]
    path = same[0] if same else max(stored, key=lambda entry: (entry[0], str(entry[1])))[1]
    if path.name != "achievement.json":  # reports/achievements/<id>.json: the record alone
        return ReportFiles(None, {"achievement.json": path})
    files = {name: path.parent / name for name, _ in REPORT_FILES
             if (path.parent / name).is_file()}
    return ReportFiles(path.parent, files)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(path: Path, reports_dir: Path) -> str:
    relative = Path(os.path.relpath(path.resolve(), reports_dir.resolve())).as_posix()
    return _e(quote(relative))


def _time(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return "unknown date"
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return _e(text)
    return f'<time datetime="{_e(text)}">{moment:%d %b %Y, %H:%M} UTC</time>'


def _number(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return "—"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    return f"{value:,.0f} {unit}".strip() if value >= 10 else f"{value:,.2f} {unit}".strip()


def _note_parts(measurement: dict[str, Any]) -> tuple[str | None, str | None]:
    """A measurement's note split into the interval's scope ("within this run only") and the
    reasons behind its verdict."""
    note = measurement.get("note")
    if not isinstance(note, str) or not note:
        return None, None
    if note.startswith(INTERVAL_NOTE):
        scope, _, reasons = note.removeprefix(INTERVAL_NOTE).partition("; ")
        return scope, reasons or None
    return None, note


def _figure(key: str, label: str, record: dict[str, Any]) -> str:
    shown = record["metrics"].get(key)
    measurement = record["measurements"].get(key)
    if not isinstance(shown, str) or not isinstance(measurement, dict):
        return ""
    verdict = str(measurement.get("verdict") or "")
    css = "" if verdict in GOOD_VERDICTS else ("bad" if verdict in BAD_VERDICTS else "flat")
    ratio = measurement.get("ratio")
    if verdict == "derived" and isinstance(ratio, int | float) and ratio < 1:
        css = "bad"  # a "saving" from a capacity that fell is a cost, whatever its sign says
    value, _, rest = shown.split(" (")[0].partition(" per ")  # "$80.00 per instance-month..."
    if rest:
        label = f"{label} per {rest}"
    ci = measurement.get("ci95")
    scope, _ = _note_parts(measurement)
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        interval = f"95% CI {ci[0]:.2f}–{ci[1]:.2f}" + (f" ({scope})" if scope else "")
    else:
        interval = "no 95% CI" + (" (see the notes)" if _note_parts(measurement)[1] else "")
    unit = str(measurement.get("unit") or "")
    if " per " in unit:  # a money figure: "$ per instance-month"
        currency, _, per = unit.partition(" per ")
        detail = " → ".join(f"{currency}{v:,.2f}" if isinstance(v, int | float) else "—"
                            for v in (measurement.get("baseline"), measurement.get("candidate")))
        detail += f" per {per}"
    else:
        detail = (f"{_number(measurement.get('baseline'), unit)} → "
                  f"{_number(measurement.get('candidate'), unit)}")
    if measurement.get("stage"):
        detail += f" at {measurement['stage']}"
    return (f'<li class="figure {css}"><span class="v">{_e(value)}</span>'
            f'<span class="k">{_e(label)}: <span class="verdict">{_e(verdict)}</span></span>'
            f'<span class="ci">{_e(interval)}</span>'
            f'<span class="detail">{_e(detail)}</span></li>')


def _card(item: dict[str, Any], reports_dir: Path, files: ReportFiles) -> str:
    record = item["_loadproof"]
    anchor = re.sub(r"[^A-Za-z0-9_-]", "-", record["comparison_id"])
    provenance = record.get("provenance") if isinstance(record.get("provenance"), dict) else {}
    arms = []
    for role in ("baseline_run", "candidate_run"):
        run = provenance.get(role)
        if isinstance(run, dict):
            arms.append(f'{_e(run.get("label", "?"))} (<code>{_e(run.get("run_id", "?"))}</code>)')
    dates = f"Published {_time(item.get('date_published'))}"
    if item.get("date_modified") and item.get("date_modified") != item.get("date_published"):
        dates += f" · updated {_time(item.get('date_modified'))}"
    parts = [f'<li class="card" id="{_e(anchor)}">',
             f"<h2>{_e(record['title'])}</h2>",
             f'<p class="meta">{dates}'
             + (f"<br>{' against '.join(reversed(arms))}" if len(arms) == 2 else "") + "</p>"]
    summary = item.get("content_text") or record.get("summary")
    if summary:
        parts.append(f'<p class="summary">{_e(summary)}</p>')
    figures = "".join(_figure(key, label, record) for key, label in HEADLINE)
    parts.append(f'<h3>Headline figures</h3><ul class="figures">{figures}</ul>' if figures
                 else '<h3>Headline figures</h3><p class="missing">No figure could be claimed.'
                      "</p>")
    notes: dict[str, list[str]] = {}  # one line per distinct reason, naming its figures
    for key, label in HEADLINE:
        measurement = record["measurements"].get(key)
        if key in record["metrics"] and isinstance(measurement, dict):
            _, reasons = _note_parts(measurement)
            if reasons:
                notes.setdefault(reasons, []).append(label)
    if notes:
        parts.append('<h3>Notes on the figures</h3><ul class="notes">'
                     + "".join(f"<li>{_e(', '.join(labels))}: {_e(reason)}</li>"
                               for reason, labels in notes.items()) + "</ul>")
    omitted = [(label, record["omitted"][key]) for key, label in HEADLINE
               if key in record["omitted"]]
    if omitted:
        parts.append('<h3>Not claimed</h3><ul class="omitted">'
                     + "".join(f"<li>{_e(label)}: {_e(reason)}</li>" for label, reason in omitted)
                     + "</ul>")
    caveats = "".join(f"<li>{_e(c)}</li>" for c in record["caveats"])
    parts.append('<h3>Caveats</h3>' + (f'<ul class="caveats">{caveats}</ul>' if caveats
                                       else '<p class="missing">None raised by the claim '
                                            "guards.</p>"))
    links = [f'<li><a href="{_href(files.files[name], reports_dir)}">{_e(text)}</a></li>'
             for name, text in REPORT_FILES if name in files.files]
    if links:
        parts.append(f'<ul class="links">{"".join(links)}</ul>')
    if "report.html" not in files.files:
        parts.append(f'<p class="missing">No report under {_e(reports_dir)} for this '
                     "achievement (written elsewhere, or removed).</p>")
    technologies = record.get("technologies")
    if isinstance(technologies, list) and technologies:
        parts.append(f'<p class="tech">{_e(" · ".join(str(t) for t in technologies))}</p>')
    parts.append("</li>")
    return "\n".join(parts)


def render_page(feed: dict[str, Any], reports_dir: Path, *, generated_at: str | None = None) \
        -> str:
    """index.html for ``feed`` (as read by read_feed), linking files under ``reports_dir``."""
    found = find_report_files(reports_dir)
    items = feed["items"]
    cards = "\n".join(_card(item, reports_dir, report_files_for(item["_loadproof"], found))
                      for item in items)
    title = str(feed.get("title") or "loadproof achievements")
    count = f"{len(items)} achievement{'s' if len(items) != 1 else ''}"
    style_hash = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    body = (f'<ul class="cards">\n{cards}\n</ul>' if items else
            "<p>No achievements yet: <code>loadproof report</code> or <code>loadproof "
            "pipeline</code> adds one.</p>")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'sha256-{style_hash}'">
<title>{_e(title)}</title>
<link rel="alternate" type="application/feed+json" href="{FEED_NAME}" title="{_e(title)}">
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{_e(title)}</h1>
<p>{count}, each measured with k6 and compared stage by stage with 95% intervals. Ratios above 1
favour the candidate.</p>
</header>
<main>
{body}
</main>
<footer>
<p>Made by <code>loadproof site</code> from <a href="{FEED_NAME}">{FEED_NAME}</a> (JSON Feed) on
{_time(generated_at or iso(utcnow()))}.</p>
</footer>
</body>
</html>
"""


def build_site(reports_dir: Path) -> Path:
    """Write ``reports_dir/index.html`` from ``reports_dir/feed.json``; returns its path."""
    feed = read_feed(reports_dir / FEED_NAME)
    page = render_page(feed, reports_dir)
    out = reports_dir / INDEX_NAME
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
