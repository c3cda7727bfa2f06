"""A report as one self-contained HTML page: SVG charts of the funnel, email performance per
step and NPS, then tables; every section says what it is computed from. No script, no
external file: it opens from disk, an email attachment or ``GET /v1/reports.html``."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from engine.reports.figures import EmailCounts, Report
from engine.reports.period import Period
from engine.reports.significance import p_text
from engine.reports.terminal import days, nps_text, pct

COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1")
EXIT_COLOUR = "#bab0ac"
EMAIL_BARS = (  # what each step's bars show, in order: shares of the emails sent
    ("delivered", "#76b7b2"),
    ("opened", "#59a14f"),
    ("clicked", "#f28e2b"),
    ("bounced", "#e15759"),
)
NPS_PARTS = (("promoters", "#59a14f"), ("passives", "#edc948"), ("detractors", "#e15759"))

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222;"
    "padding:0 1em}h1{margin-bottom:.2em}section{margin:2.5em 0}"
    "p.from{color:#666;font-size:.9em;margin-top:.3em}"
    "table{border-collapse:collapse;margin:.6em 0}"
    "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
    "td:first-child,th:first-child{text-align:left}tr.total td{font-weight:bold}"
    ".figures{display:flex;gap:2.5em;flex-wrap:wrap}.figure b{display:block;font-size:1.8em}"
    ".note{background:#fff8e1;padding:.5em 1em;border-left:4px solid #edc948}"
)


def html_report(report: Report) -> str:
    bounds = Period(report.since, report.until).bounds()
    bounds = f" ({bounds})" if bounds else ""
    head = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Journeyline report: {escape(report.period)}</title>"
        f"<style>{STYLE}</style></head><body><h1>Journeyline report</h1>"
        f"<p>{escape(report.period)}{escape(bounds)}; generated "
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC.</p>"
    )
    notes = "".join(f"<p class='note'>{escape(n)}</p>" for n in report.notes)
    if report.empty:
        return f"{head}{notes}</body></html>"
    sections = (
        _section(
            "Funnel", report.funnel.computed_from, _funnel_svg(report) + _funnel_table(report)
        ),
        _section(
            "Email performance per step",
            report.emails.computed_from,
            _emails_svg(report) + _emails_table(report),
        ),
        _section("Goals", report.goals.computed_from, _goals_table(report) + _ab_tables(report)),
        _section("NPS", report.nps.computed_from, _nps(report)),
        _section("Retention and churn", report.retention.computed_from, _retention(report)),
        _section("Revenue", report.revenue.computed_from, _revenue(report)),
    )
    return f"{head}{notes}{''.join(sections)}</body></html>"


def _section(title: str, computed_from: str, body: str) -> str:
    return (
        f"<section><h2>{escape(title)}</h2>{body}"
        f"<p class='from'>From {escape(computed_from)}.</p></section>"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, total: bool = False) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{' class=total' if total and i == len(rows) - 1 else ''}>"
        + "".join(f"<td>{escape(cell)}</td>" for cell in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# --- funnel ---------------------------------------------------------------------------------


def _funnel_svg(report: Report) -> str:
    stages = report.funnel.stages
    top = max((s.reached for s in stages), default=0) or 1
    bar, gap, width, left = 26, 8, 560, 130
    parts = []
    for i, row in enumerate(stages):
        y = i * (bar + gap)
        w = round(width * row.reached / top)
        colour = EXIT_COLOUR if row.journey == "exit" else COLOURS[i % len(COLOURS)]
        label = f"{row.reached}" + (
            f" ({pct(row.conversion)})" if row.conversion is not None else ""
        )
        parts.append(
            f"<text x='0' y='{y + 18}' font-size='13'>{escape(row.stage)}</text>"
            f"<rect x='{left}' y='{y}' width='{w}' height='{bar}' fill='{colour}'>"
            f"<title>{escape(row.stage)}: {row.reached} reached</title></rect>"
            f"<text x='{left + w + 6}' y='{y + 18}' font-size='13'>{escape(label)}</text>"
        )
    height = len(stages) * (bar + gap)
    return (
        f"<svg width='{left + width + 120}' height='{height}' role='img' "
        f"aria-label='Funnel: contacts reaching each stage'>{''.join(parts)}</svg>"
    )


def _funnel_table(report: Report) -> str:
    rows = [
        [
            f"{s.stage} (exit)" if s.journey == "exit" else s.stage,
            str(s.entered),
            str(s.reached),
            pct(s.conversion),
            days(s.median_days_in_stage),
            "-" if s.journey == "exit" else str(s.stays_ended),
        ]
        for s in report.funnel.stages
    ]
    headers = ("stage", "entered", "reached", "conversion", "median days in stage", "stays")
    return _table(headers, rows)


# --- emails ---------------------------------------------------------------------------------


def _emails_svg(report: Report) -> str:
    """Per step, bars of its rates (of emails sent), so steps of any size compare; the
    counts are in the table below. Delivered is left out when no delivery was reported."""
    steps = report.emails.steps
    if not steps:
        return "<p>No emails sent in the period.</p>"
    bars = [(f, c) for f, c in EMAIL_BARS if f != "delivered" or report.emails.total.delivered]
    bar, group_gap, width, left, top = 12, 18, 480, 280, 22
    per_step = len(bars) * bar + group_gap
    parts = [  # a light grid at 0, 25, 50, 75 and 100%
        f"<line x1='{left + width * q / 4:.0f}' y1='{top - 4}' x2='{left + width * q / 4:.0f}' "
        f"y2='{top + len(steps) * per_step - group_gap}' stroke='#ddd'></line>"
        f"<text x='{left + width * q / 4:.0f}' y='{top - 8}' font-size='10' "
        f"text-anchor='middle' fill='#666'>{25 * q}%</text>"
        for q in range(5)
    ]
    for i, step in enumerate(steps):
        y0 = top + i * per_step
        name = f"{step.workflow}:{step.step}"
        parts.append(
            f"<text x='0' y='{y0 + 12}' font-size='13'>{escape(name[:40])}</text>"
            f"<text x='0' y='{y0 + 27}' font-size='11' fill='#666'>{step.sent} sent</text>"
        )
        rates = step.rates
        for j, (field, colour) in enumerate(bars):
            share = getattr(rates, field) or 0.0
            count = getattr(step, field)
            y = y0 + j * bar
            w = round(width * share)
            parts.append(
                f"<rect x='{left}' y='{y}' width='{w}' height='{bar - 2}' fill='{colour}'>"
                f"<title>{escape(name)}: {count} {field} of {step.sent} sent</title></rect>"
                f"<text x='{left + w + 4}' y='{y + bar - 3}' font-size='10'>"
                f"{pct(share)} ({count})</text>"
            )
    legend = " ".join(
        f"<span style='color:{colour}'>&#9632;</span> {field}" for field, colour in bars
    )
    height = top + len(steps) * per_step
    return (
        f"<p>Share of the emails sent: {legend}</p>"
        f"<svg width='{left + width + 80}' height='{height}' role='img' "
        f"aria-label='Email performance per step, as shares of emails sent'>"
        f"{''.join(parts)}</svg>"
    )


def _email_cells(counts: EmailCounts) -> list[str]:
    rates = counts.rates
    return [
        str(counts.sent),
        f"{counts.delivered} ({pct(rates.delivered)})",
        f"{counts.opened} ({pct(rates.opened)})",
        f"{counts.clicked} ({pct(rates.clicked)})",
        pct(rates.click_to_open),
        f"{counts.bounced} ({pct(rates.bounced)})",
        f"{counts.unsubscribed} ({pct(rates.unsubscribed)})",
        f"{counts.spam_reported} ({pct(rates.spam_reported)})",
    ]


def _emails_table(report: Report) -> str:
    rows = [[f"{s.workflow}:{s.step}", *_email_cells(s)] for s in report.emails.steps]
    rows.append(["all emails", *_email_cells(report.emails.total)])
    headers = (
        "workflow:step",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "click-to-open",
        "bounced",
        "unsubscribed",
        "spam",
    )
    return _table(headers, rows, total=True)


# --- goals ----------------------------------------------------------------------------------


def _goals_table(report: Report) -> str:
    rows = []
    for row in report.goals.workflows:
        no_goal = row.has_goal is False
        rows.append(
            [
                row.workflow + ("" if row.has_goal is not None else " (not loaded)"),
                str(row.entered),
                "-" if no_goal else str(row.converted),
                "no goal" if no_goal else pct(row.conversion),
                str(row.running),
            ]
        )
    if not rows:
        return "<p>No enrollments started in the period.</p>"
    return _table(("workflow", "entered", "converted", "conversion", "still running"), rows)


def _ab_tables(report: Report) -> str:
    parts = []
    for test in report.goals.ab_tests:
        rows = [
            [
                v.variant,
                str(v.entered),
                str(v.converted),
                pct(v.conversion),
                "(base)" if i == 0 else ("too few" if v.p_value is None else p_text(v.p_value)),
            ]
            for i, v in enumerate(test.variants)
        ]
        parts.append(
            f"<h3>A/B: {escape(test.workflow)}, split {escape(test.split)}</h3>"
            + _table(("variant", "entered", "converted", "conversion", "p-value"), rows)
            + f"<p>{escape(test.verdict)}</p>"
        )
    return "".join(parts)


# --- NPS, retention, revenue ----------------------------------------------------------------


def _figure(value: str, label: str) -> str:
    return f"<div class='figure'><b>{escape(value)}</b>{escape(label)}</div>"


def _nps(report: Report) -> str:
    nps = report.nps
    figures = (
        "<div class='figures'>"
        + _figure(nps_text(nps), "NPS")
        + _figure(str(nps.answers), "answers")
        + "".join(_figure(str(getattr(nps, part)), part) for part, _ in NPS_PARTS)
        + "</div>"
    )
    if not nps.answers:
        return figures
    width, x, bars = 600, 0.0, []
    for part, colour in NPS_PARTS:
        w = width * getattr(nps, part) / nps.answers
        bars.append(
            f"<rect x='{x:.1f}' y='0' width='{w:.1f}' height='24' fill='{colour}'>"
            f"<title>{part}: {getattr(nps, part)}</title></rect>"
        )
        x += w
    ignored = (
        f"<p>{nps.ignored} answer(s) without a usable score ignored.</p>" if nps.ignored else ""
    )
    return (
        f"{figures}<svg width='{width}' height='24' role='img' "
        f"aria-label='Promoters, passives, detractors'>{''.join(bars)}</svg>{ignored}"
    )


def _retention(report: Report) -> str:
    kept = report.retention
    return (
        "<div class='figures'>"
        + _figure(str(kept.customers), "customers")
        + _figure(str(kept.at_start), "at the start")
        + _figure(str(kept.new_customers), "new")
        + _figure(str(kept.churned), "churned")
        + _figure(pct(kept.churn_rate), "churn rate")
        + _figure(str(kept.reactivated), "came back")
        + "</div>"
    )


def _revenue(report: Report) -> str:
    revenue = report.revenue
    rows = [
        [
            line.currency or "(none given)",
            str(line.orders),
            f"{line.revenue:,.2f}",
            str(line.customers),
            "-" if line.revenue_per_customer is None else f"{line.revenue_per_customer:,.2f}",
        ]
        for line in revenue.lines
    ]
    table = (
        _table(("currency", "orders", "revenue", "customers", "revenue per customer"), rows)
        if rows
        else "<p>No orders in the period.</p>"
    )
    ignored = (
        f"<p>{revenue.ignored_orders} order(s) without a numeric total ignored.</p>"
        if revenue.ignored_orders
        else ""
    )
    return table + ignored
