"""A use-case experiment report as plain text for the terminal.

``render_text(report)`` gives the header, a table per arm, one line per estimate (treatment minus
control, with its confidence interval, p-value and verdict), then the sample-ratio check, the power
reached against the plan and the contaminated persons excluded. Text from the report (the hypothesis
is user input) has its control characters replaced, so it cannot drive the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.domain.experiments.model import Estimate, UseCaseReport
from streams.reports import formatting as fmt


def render_text(report: UseCaseReport) -> str:
    lines: list[str] = []
    lines += _header(report)
    lines += ["", "Arms"]
    lines += _table(
        ["arm", "persons", "conversions", "conv. rate", "revenue/person", "orders", "AOV"],
        [
            [
                str(a.arm),
                fmt.count(a.persons),
                fmt.count(a.conversions),
                fmt.percent(a.conversion_rate),
                fmt.money(a.revenue_per_person),
                fmt.count(a.orders),
                fmt.money(a.aov),
            ]
            for a in report.arms
        ],
        left=1,
    )
    ci = fmt.ci_label(report.alpha)
    lines += ["", f"Estimates (treatment - control, {ci})"]
    if report.estimates:
        lines += _table(
            ["KPI", "role", "control", "treatment", f"abs. lift [{ci}]", f"rel. lift [{ci}]", "p", "verdict"],
            [_estimate_row(e) for e in report.estimates],
            left=2,
        )
    else:
        lines.append("  no estimates")
    lines += ["", fmt.srm_line(report.sample_ratio)]
    lines += fmt.power_lines(report)
    lines.append(f"Contaminated persons excluded: {fmt.count(report.contaminated)}")
    return "\n".join(lines) + "\n"


def _header(report: UseCaseReport) -> list[str]:
    fields = fmt.header_fields(report)
    width = max(len(label) for label, _ in fields) + 1
    out = [f"Use-case report: {_clean(report.usecase_id)} v{report.version}"]
    for label, text in fields:
        first, *rest = _clean(text).split("\n")
        out.append(f"{label + ':':<{width}} {first}")
        out += [f"{'':<{width}} {more}" for more in rest]
    return out


def _estimate_row(e: Estimate) -> list[str]:
    return [
        _clean(e.kpi),
        fmt.ROLE_LABELS[e.role],
        fmt.value(e.control, e.kind),
        fmt.value(e.treatment, e.kind),
        fmt.absolute_with_ci(e),
        fmt.relative_with_ci(e),
        fmt.p_value(e.p_value),
        fmt.verdict(e),
    ]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> list[str]:
    """Aligned columns: the first ``left`` columns flush left (names), the others flush right (numbers)."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(padded)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _clean(text: str) -> str:
    """``text`` with every control character but the newline shown as a space (no terminal escapes)."""
    return "".join(ch if ch == "\n" or ch.isprintable() else " " for ch in text)
