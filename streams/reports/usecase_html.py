"""A use-case experiment report as ONE self-contained HTML page.

``render_html(report)`` gives a page that needs no network: inline CSS, charts as inline SVG drawn in
Python (``charts.py``), no script at all, and a Content-Security-Policy that forbids the page to load
anything. It shows the header, the sample-ratio badge, power, the arms and the estimates (exploratory
KPIs marked), the primary KPI's cumulative lift by day and a forest plot of the relative lifts. Every
text from the report goes through ``html.escape`` (the hypothesis is user input).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from streams.domain.experiments.model import Estimate, UseCaseReport
from streams.reports import charts
from streams.reports import formatting as fmt

# Nothing may be fetched: no script, font, stylesheet, image or frame; only the inline <style>.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 24px auto; max-width: 1000px; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 22px; margin: 0 0 12px; } h2 { font-size: 17px; margin: 28px 0 8px; }
dl.header { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.header dt { font-weight: 600; color: #555; } dl.header dd { margin: 0; white-space: pre-wrap; }
table { border-collapse: collapse; font-size: 14px; }
.scroll { overflow-x: auto; }
th, td { padding: 5px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f3f5f8; } th.name, td.name { text-align: left; }
tr.role-exploratory td { background: #fbf8ef; color: #555; font-style: italic; }
.tag { display: inline-block; white-space: nowrap; padding: 1px 6px; border-radius: 4px; font-size: 12px;
       font-style: normal; }
.tag.primary { background: #1f5fa8; color: #fff; } .tag.guardrail { background: #e2e8f0; color: #223; }
.tag.exploratory { border: 1px dashed #a07d1c; color: #7a5c00; background: #fff6da; white-space: normal; }
.significant { font-weight: 700; } .ci { color: #666; font-size: 12px; }
.badge { display: inline-block; padding: 6px 12px; border-radius: 6px; font-weight: 700; margin: 14px 0 4px; }
.badge.srm-ok { background: #e3f4e6; color: #1d6b30; border: 1px solid #9fd3aa; }
.badge.srm-mismatch { background: #fde2e1; color: #9b1c1c; border: 2px solid #d33; }
.badge.srm-unknown { background: #eee; color: #444; border: 1px solid #bbb; }
p.note { color: #666; font-size: 13px; margin: 6px 0; }
p.no-data { border: 1px dashed #bbb; padding: 24px; color: #666; text-align: center; max-width: 680px; }
svg.chart { display: block; max-width: 100%; height: auto; background: #fff; margin: 8px 0; }
footer { margin-top: 32px; color: #888; font-size: 12px; }
"""


def render_html(report: UseCaseReport) -> str:
    title = f"Use-case report: {report.usecase_id} v{report.version}"
    ci = fmt.ci_label(report.alpha)
    primary = fmt.primary(report)
    cumulative = charts.cumulative_lift(
        report.cumulative, fmt.primary_kind(report), primary.kpi if primary else "none", ci
    )
    forest = charts.forest(report.estimates, ci)
    body = [
        f"<h1>{escape(title)}</h1>",
        _header(report),
        _srm_badge(report),
        '<section id="power">',
        *(f"<p>{escape(line)}</p>" for line in fmt.power_lines(report)),
        f"<p>Contaminated persons excluded: {escape(fmt.count(report.contaminated))}</p>",
        "</section>",
        "<h2>Arms</h2>",
        _arms(report),
        f"<h2>Estimates <small>(treatment - control, {escape(ci)})</small></h2>",
        _estimates(report.estimates),
        '<p class="note">Exploratory KPIs were not named before the start: a lead to test in a new'
        " use case, never a result.</p>",
        '<h2>Charts</h2><div id="cumulative">',
        cumulative
        or '<p class="no-data">Cumulative lift of the primary KPI over time: not enough data yet.</p>',
        '</div><div id="forest">',
        forest or '<p class="no-data">Relative lift per KPI: no relative lift to plot yet.</p>',
        "</div>",
        f"<footer>Generated {escape(fmt.when(report.generated_at))}.</footer>",
    ]
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{CSS}</style>",
            "</head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _header(report: UseCaseReport) -> str:
    rows = [f"<dt>{escape(label)}</dt><dd>{escape(text)}</dd>" for label, text in fmt.header_fields(report)]
    return '<dl class="header">' + "".join(rows) + "</dl>"


def _srm_badge(report: UseCaseReport) -> str:
    s = report.sample_ratio
    state = "srm-mismatch" if s.mismatch else "srm-ok" if fmt.finite(s.p_value) else "srm-unknown"
    return f'<p id="srm" class="badge {state}">{escape(fmt.srm_line(s))}</p>'


def _table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], names: int, cls: str) -> str:
    """Rows as (row class, cells, already escaped); the first ``names`` columns are flush left."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="name">{v}</{tag}>' if i < names else f"<{tag}>{v}</{tag}>"
            for i, v in enumerate(values)
        )

    head = f"<thead><tr>{cells('th', [escape(h) for h in headers])}</tr></thead>"
    body = "".join(f'<tr class="{row_cls}">{cells("td", values)}</tr>' for row_cls, values in rows)
    return f'<div class="scroll"><table class="{cls}">{head}<tbody>{body}</tbody></table></div>'


def _arms(report: UseCaseReport) -> str:
    headers = ["arm", "persons", "conversions", "conv. rate", "revenue/person", "orders", "AOV"]
    rows = [
        (
            f"arm-{a.arm.value}",
            [
                escape(v)
                for v in (
                    str(a.arm),
                    fmt.count(a.persons),
                    fmt.count(a.conversions),
                    fmt.percent(a.conversion_rate),
                    fmt.money(a.revenue_per_person),
                    fmt.count(a.orders),
                    fmt.money(a.aov),
                )
            ],
        )
        for a in report.arms
    ]
    return _table(headers, rows, 1, "arms")


def _estimates(estimates: Sequence[Estimate]) -> str:
    if not estimates:
        return '<p class="no-data">No estimates.</p>'
    headers = ["KPI", "role", "control", "treatment", "abs. lift [CI]", "rel. lift [CI]", "p", "verdict"]
    rows = []
    for e in estimates:
        role = f'<span class="tag {e.role.value}">{escape(fmt.ROLE_LABELS[e.role])}</span>'
        numbers = [
            escape(fmt.value(e.control, e.kind)),
            escape(fmt.value(e.treatment, e.kind)),
            _with_ci(fmt.absolute_parts(e)),
            _with_ci(fmt.relative_parts(e)),
            escape(fmt.p_value(e.p_value)),
        ]
        verdict = fmt.verdict(e)
        verdict_cell = (
            f'<span class="significant">{escape(verdict)}</span>' if e.significant else escape(verdict)
        )
        rows.append(
            (
                f"estimate role-{e.role.value}",
                [escape(e.kpi), role, *numbers, verdict_cell],
            )
        )
    return _table(headers, rows, 2, "estimates")


def _with_ci(parts: tuple[str, str]) -> str:
    value, interval = parts
    return escape(value) + (f'<br><span class="ci">{escape(interval)}</span>' if interval else "")
