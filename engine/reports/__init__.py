"""Reports from the live database: funnel, email performance per step, goals and A/B
results, NPS, retention and revenue over a period (DESIGN.md, principle 9).

    from engine.reports import Period, build_report, reading

    period = Period.parse("30d", None, now=clock.now())
    with reading(runtime.db) as session:
        report = build_report(session, registry, since=period.since, until=period.until,
                              now=clock.now())
    print_report(report, console)        # rich tables
    Path("report.html").write_text(html_report(report))
    report.model_dump(mode="json")       # what `journeyline report --json` prints

Each section reads the tables with SQL aggregates (``GROUP BY``, ``COUNT``), on SQLite and
PostgreSQL alike, and says in its ``computed_from`` what its figures are made of. The
funnel's rules are the simulator's (``funnel_rows``, shared with ``engine.simulation_results``).
"""

from engine.reports.build import build_report, reading
from engine.reports.figures import (
    EmailCounts,
    Emails,
    EmailStep,
    Funnel,
    Goals,
    Nps,
    Report,
    Retention,
    Revenue,
    RevenueLine,
    SplitTest,
    StageFigures,
    VariantFigures,
    WorkflowGoals,
)
from engine.reports.funnel import FunnelRow, funnel_rows
from engine.reports.page import html_report
from engine.reports.period import Period, parse_moment
from engine.reports.significance import two_proportion_p_value
from engine.reports.terminal import print_report

__all__ = [
    "EmailCounts",
    "EmailStep",
    "Emails",
    "Funnel",
    "FunnelRow",
    "Goals",
    "Nps",
    "Period",
    "Report",
    "Retention",
    "Revenue",
    "RevenueLine",
    "SplitTest",
    "StageFigures",
    "VariantFigures",
    "WorkflowGoals",
    "build_report",
    "funnel_rows",
    "html_report",
    "parse_moment",
    "print_report",
    "reading",
    "two_proportion_p_value",
]
