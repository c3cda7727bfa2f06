"""A report as rich tables, as ``journeyline report`` prints it; each table's caption says
what its figures are computed from."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.reports.figures import EmailCounts, Nps, Report
from engine.reports.period import Period
from engine.reports.significance import p_text


def half_up(value: float | Decimal, places: int = 0) -> Decimal:
    """``value`` rounded as people round by hand, halves away from zero: 12.5% reads 13%
    like 37.5% reads 38% (Python's formatting rounds halves to even, 12% and 38%)."""
    exact = value if isinstance(value, Decimal) else Decimal(repr(value))
    rounded = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return rounded + 0  # no "-0"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{half_up(Decimal(repr(value)) * 100)}%"


def days(value: float | None) -> str:
    return "-" if value is None else str(half_up(value, 1))


def nps_text(nps: Nps) -> str:
    """The NPS as shown, ``+14``, ``-3``, ``+0``: rounded from the counts, not from the
    JSON's one-decimal figure (12.46 would go to 12.5 there, and then to 13)."""
    if not nps.answers:
        return "-"
    exact = Decimal(100 * (nps.promoters - nps.detractors)) / Decimal(nps.answers)
    return f"{half_up(exact):+}"


def _of(count: int, share: float | None) -> str:
    return f"{count} ({pct(share)})" if share is not None else str(count)


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def print_report(report: Report, console: Console) -> None:
    bounds = Period(report.since, report.until).bounds()
    said = escape(report.period + (f" ({bounds})" if bounds else ""))
    console.print(f"[bold]Journeyline report[/]: {said}", highlight=False)
    if report.empty:
        console.print(
            f"No data in this period ({escape(report.period)}): no stage changes, emails, "
            "enrollments, NPS answers or orders.",
            highlight=False,
        )
        return
    for table in (
        _funnel(report),
        _emails(report),
        _goals(report),
        *([_ab_tests(report)] if report.goals.ab_tests else []),
        _nps(report),
        _retention(report),
        _revenue(report),
    ):
        console.print(_figures_whole(table))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def _figures_whole(table: Table) -> Table:
    """Never cut a figure to fit a narrow terminal: "100%" cut to "10…" reads as 10. The
    figures' (right-aligned) columns keep their widest cell; names give way instead."""
    for column in table.columns:
        if column.justify == "right":
            widest = max((len(str(cell)) for cell in column.cells), default=0)
            column.min_width = max(column.min_width or 0, widest)
    return table


def _caption(text: str) -> str:
    return escape(f"From {text}.")


def _table(title: str, caption: str | None = None) -> Table:
    return Table(title=title, caption=caption, caption_justify="left")


def _funnel(report: Report) -> Table:
    table = _table("Funnel: contacts reaching each stage", _caption(report.funnel.computed_from))
    for name in ("stage", "entered", "reached", "conversion", "median days in stage", "stays"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    stages = report.funnel.stages
    for i, row in enumerate(stages):
        apart = row.journey == "exit"
        last_of_funnel = not apart and i + 1 < len(stages) and stages[i + 1].journey == "exit"
        table.add_row(
            f"{row.stage} (exit)" if apart else row.stage,
            str(row.entered),
            str(row.reached),
            pct(row.conversion),
            days(row.median_days_in_stage),
            "-" if apart else str(row.stays_ended),
            style="dim" if apart else None,
            end_section=last_of_funnel,
        )
    return table


def _email_cells(counts: EmailCounts) -> list[str]:
    """Sent, then each outcome as a share of sent: a terminal row has room for rates, not
    for counts beside them (``--json`` and ``--html`` give both)."""
    rates = counts.rates
    return [
        str(counts.sent),
        pct(rates.delivered),
        pct(rates.opened),
        pct(rates.clicked),
        pct(rates.bounced),
        pct(rates.unsubscribed),
        pct(rates.spam_reported),
    ]


def _emails(report: Report) -> Table:
    table = _table(
        "Email performance per workflow step (% of sent)",
        _caption(report.emails.computed_from),
    )
    # A workflow's name heads its steps, so the step column stays narrow enough for an
    # 80-column terminal ("consideration_compare:comparison" would be cut to "conside…"),
    # and the table has no outer edge for the same reason.
    table.show_edge = False
    table.add_column("workflow / step", justify="left", no_wrap=True)
    for name in ("sent", "deliv", "opens", "clicks", "bounce", "unsub", "spam"):
        table.add_column(name, justify="right", no_wrap=True)
    steps = report.emails.steps
    for i, step in enumerate(steps):
        if i == 0 or steps[i - 1].workflow != step.workflow:
            table.add_row(escape(step.workflow), style="bold")
        table.add_row(
            escape(f"  {step.step}"),
            *_email_cells(step),
            end_section=i == len(steps) - 1,
        )
    table.add_row("all emails", *_email_cells(report.emails.total), style="bold")
    return table


def _goals(report: Report) -> Table:
    table = _table(
        "Goal conversions per workflow (enrollments started in the period)",
        _caption(report.goals.computed_from),
    )
    for name in ("workflow", "entered", "converted", "conversion", "still running"):
        table.add_column(name, justify="left" if name == "workflow" else "right")
    for row in report.goals.workflows:
        no_goal = row.has_goal is False
        table.add_row(
            escape(row.workflow) + ("" if row.has_goal is not None else " (not loaded)"),
            str(row.entered),
            "-" if no_goal else str(row.converted),
            "no goal" if no_goal else pct(row.conversion),
            str(row.running),
        )
    return table


def _ab_tests(report: Report) -> Table:
    verdicts = "\n".join(f"{t.workflow}:{t.split}: {t.verdict}" for t in report.goals.ab_tests)
    table = _table("A/B variants (p-value: against the first variant)", escape(verdicts))
    for name in ("workflow:split=variant", "entered", "converted", "conversion", "p-value"):
        table.add_column(name, justify="left" if name.startswith("workflow") else "right")
    for test in report.goals.ab_tests:
        for i, variant in enumerate(test.variants):
            if i == 0:
                p_value = "(base)"
            elif variant.p_value is None:
                p_value = "too few"
            else:
                p_value = p_text(variant.p_value)
            table.add_row(
                escape(f"{test.workflow}:{test.split}={variant.variant}"),
                str(variant.entered),
                str(variant.converted),
                pct(variant.conversion),
                p_value,
                end_section=i == len(test.variants) - 1,
            )
    return table


def _nps(report: Report) -> Table:
    nps = report.nps
    table = _table("NPS", _caption(nps.computed_from))
    for name in ("answers", "promoters (9-10)", "passives (7-8)", "detractors (0-6)", "NPS"):
        table.add_column(name, justify="right")
    share = (lambda n: n / nps.answers) if nps.answers else (lambda n: None)
    table.add_row(
        str(nps.answers),
        _of(nps.promoters, share(nps.promoters)),
        _of(nps.passives, share(nps.passives)),
        _of(nps.detractors, share(nps.detractors)),
        nps_text(nps),
    )
    if nps.ignored:
        table.caption = f"{table.caption} {nps.ignored} answer(s) without a usable score ignored."
    return table


def _retention(report: Report) -> Table:
    kept = report.retention
    table = _table("Retention and churn", _caption(kept.computed_from))
    for name in ("customers", "at the start", "new", "churned", "churn rate", "came back"):
        table.add_column(name, justify="right")
    table.add_row(
        str(kept.customers),
        str(kept.at_start),
        str(kept.new_customers),
        str(kept.churned),
        pct(kept.churn_rate),
        str(kept.reactivated),
    )
    return table


def _revenue(report: Report) -> Table:
    revenue = report.revenue
    table = _table("Revenue and revenue per customer", _caption(revenue.computed_from))
    for name in ("currency", "orders", "revenue", "customers", "revenue per customer"):
        table.add_column(name, justify="left" if name == "currency" else "right")
    for line in revenue.lines:
        table.add_row(
            escape(line.currency or "(none given)"),
            str(line.orders),
            _money(line.revenue),
            str(line.customers),
            _money(line.revenue_per_customer),
        )
    if not revenue.lines:
        table.add_row("-", "0", "-", "0", "-")
    if revenue.ignored_orders:
        table.caption = (
            f"{table.caption} {revenue.ignored_orders} order(s) without a numeric total ignored."
        )
    return table
