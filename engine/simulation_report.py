"""Showing simulation results: rich tables for the terminal, one HTML page with SVG charts."""

from __future__ import annotations

import html
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.reports.significance import MIN_EXPECTED, p_text, two_proportion_p_value
from engine.simulation_results import SimulationResult

COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_results(results: Sequence[SimulationResult], console: Console) -> None:
    """One result, or several side by side (``--compare``). Names (labels, stages, workflows,
    steps, variants) are printed as written: a ``[`` in one is no Rich markup."""
    labels = [escape(r.label or "run") for r in results]
    funnel = Table(title="Funnel: contacts reaching each stage", caption=MEDIAN_NOTE)
    # Side by side the table is wide: the stage names never shrink, long labels fold.
    stages = _all_stages(results)
    funnel.add_column("stage", no_wrap=True, min_width=max(map(len, stages)))
    for label in labels:
        funnel.add_column(f"{label}: reached", justify="right", overflow="fold")
        funnel.add_column("conversion", justify="right", overflow="fold")
        funnel.add_column("median days in stage", justify="right")
    # By name: compared journeys may differ (a stage added), and each side's figures belong
    # on its own stage's row.
    found = [{item.stage: item for item in result.funnel} for result in results]
    for stage in stages:
        row = [escape(stage)]
        for items in found:
            item = items.get(stage)
            if item is None:
                row += ["n/a", "", ""]  # not a stage of this side's journey
                continue
            row += [str(item.reached), _pct(item.conversion), _days(item.median_days_in_stage)]
        funnel.add_row(*row)
    console.print(funnel)

    emails = Table(title="Emails sent per workflow step")
    emails.add_column("workflow:step")
    for label in labels:
        emails.add_column(label, justify="right")
    for key in sorted({k for r in results for k in r.emails}):
        emails.add_row(escape(key), *(str(r.emails.get(key, 0)) for r in results))
    console.print(emails)

    goals = Table(
        title="Goal conversions per workflow (converted / entered)",
        caption="still running at the end: counted as not converted (a short run understates "
        "conversion)",
    )
    goals.add_column("workflow")
    for label in labels:
        goals.add_column(label, justify="right")
    for key in sorted({k for r in results for k in r.goals}):
        cells = []
        for r in results:
            entered, converted = r.goals.get(key, (0, 0))
            if r.workflows and key not in r.workflows:
                cells.append("- (not in this run)")
            elif key in r.without_goal:
                cells.append(f"-/{entered} (no goal)")
            else:
                rate = converted / entered if entered else None
                cells.append(f"{converted}/{entered} ({_pct(rate)}){_still(r, key)}")
        goals.add_row(escape(key), *cells)
    console.print(goals)

    if any(r.variants for r in results):
        variants = Table(title="A/B variants (converted / entered)", caption=AB_NOTE)
        variants.add_column("workflow:split=variant", overflow="fold")
        for label in labels:
            variants.add_column(label, justify="right")
        for key in sorted({k for r in results for k in r.variants}):
            variants.add_row(escape(key), *(_variant_cell(r, key) for r in results))
        console.print(variants)
    for r in results:
        for key, (count, error) in r.failed.items():
            console.print(
                f"[bold red]{escape(r.label or 'run')}: {count} {escape(key)} action(s) "
                f"failed[/] (not in the figures above; fix the workflow or template and run "
                f"again): {escape(error[:300])}",
                highlight=False,
            )
    for r in results:
        console.print(
            f"{escape(r.label or 'run')}: {r.contacts} contacts, {r.days} days, seed {r.seed}: "
            f"{r.events} events in {r.seconds:.1f} s"
        )


def _all_stages(results: Sequence[SimulationResult]) -> list[str]:
    """The stages of every result's journey, in the first one's order, a stage only another
    journey has after the stage it follows there."""
    stages = list(results[0].stages)
    for result in results[1:]:
        at = -1
        for stage in result.stages:
            if stage in stages:
                at = stages.index(stage)
            else:
                at += 1
                stages.insert(at, stage)
    return stages


MEDIAN_NOTE = (
    "median days in stage: of the stays that ended during the run; contacts still in the "
    "stage at the end are left out, so a short run understates it"
)

AB_NOTE = (
    "p: two-sided two-proportion z-test of each variant against the split's first "
    "(alphabetical, marked base); below 0.05 a difference this large is unlikely to be "
    f"chance. Too few: under {MIN_EXPECTED} expected conversions or non-conversions. "
    "Enrollments still running count as not converted."
)


def _variant_p(result: SimulationResult, key: str) -> str | None:
    """``base``, the p-value against the split's first variant, ``too few``; None when the
    run drew no such variant."""
    if key not in result.variants:
        return None
    split = key.rpartition("=")[0]
    first = min(k for k in result.variants if k.rpartition("=")[0] == split)
    if key == first:
        return "base"
    entered, converted = result.variants[key]
    base_entered, base_converted = result.variants[first]
    p = two_proportion_p_value(base_converted, base_entered, converted, entered)
    return "too few" if p is None else f"p {p_text(p)}"


def _variant_cell(result: SimulationResult, key: str) -> str:
    verdict = _variant_p(result, key)
    if verdict is None:
        return "- (not in this run)"
    entered, converted = result.variants[key]
    rate = converted / entered if entered else None
    return f"{converted}/{entered} ({_pct(rate)}), {verdict}"


def html_report(results: Sequence[SimulationResult]) -> str:
    sections = []
    for result in results:
        title = html.escape(result.label or "Simulation")
        sections.append(
            f"<section><h2>{title}</h2>"
            f"<p>{result.contacts} contacts, {result.days} days, seed {result.seed}, "
            f"{result.events} events.</p>"
            f"<h3>Funnel</h3>{_funnel_svg(result)}"
            "<p class='note'>Each bar: contacts who reached the stage (a contact counts at "
            "every stage up to the furthest she reached); in brackets, conversion from the "
            "stage before. Churned is counted apart.</p>"
            f"<h3>Contacts per stage over time</h3>{_flow_svg(result)}"
            f"<h3>Goal conversions</h3>{_goals_table(result)}{_failed_table(result)}</section>"
        )
    labels = [html.escape(r.label or "run") for r in results]
    sections.append(
        "<section><h2>Emails sent per workflow step</h2>"
        + _html_table(
            ["workflow:step", *labels],
            [
                [key, *(str(r.emails.get(key, 0)) for r in results)]
                for key in sorted({k for r in results for k in r.emails})
            ],
        )
        + "</section>"
    )
    if any(r.variants for r in results):
        sections.append(
            "<section><h2>A/B variants (converted / entered)</h2>"
            + _html_table(
                ["workflow:split=variant", *labels],
                [
                    [key, *(_variant_cell(r, key) for r in results)]
                    for key in sorted({k for r in results for k in r.variants})
                ],
            )
            + f"<p class='note'>{html.escape(AB_NOTE)}</p></section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Journeyline simulation"
        "</title><style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "section{margin-bottom:3em}table{border-collapse:collapse}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
        "td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:90%}"
        "</style></head><body>"
        "<h1>Journeyline simulation</h1>" + "".join(sections) + "</body></html>"
    )


def _funnel_svg(result: SimulationResult) -> str:
    top = max((row.reached for row in result.funnel), default=1) or 1
    bar, gap, width = 26, 8, 520
    rows = []
    for i, row in enumerate(result.funnel):
        y = i * (bar + gap)
        w = int(width * row.reached / top)
        rows.append(
            f"<text x='0' y='{y + 18}' font-size='13'>{html.escape(row.stage)}</text>"
            f"<rect x='120' y='{y}' width='{w}' height='{bar}' "
            f"fill='{COLOURS[i % len(COLOURS)]}'></rect>"
            f"<text x='{126 + w}' y='{y + 18}' font-size='13'>{row.reached} "
            f"({_pct(row.conversion)})</text>"
        )
    height = len(result.funnel) * (bar + gap)
    return f"<svg width='760' height='{height}' role='img'>{''.join(rows)}</svg>"


def _flow_svg(result: SimulationResult) -> str:
    width, height = 720, 260
    days = max(len(result.daily), 1)
    # One day is drawn as a band across the chart (one point would have no width).
    daily = result.daily if len(result.daily) > 1 else [*result.daily, *result.daily] or [{}]
    points = len(daily)
    total = max((sum(d.values()) for d in daily), default=1) or 1
    layers = []
    bottoms = [0.0] * points
    for i, stage in enumerate(result.stages):
        tops = [bottoms[d] + daily[d].get(stage, 0) for d in range(points)]
        if not any(daily[d].get(stage, 0) for d in range(points)):
            continue

        def point(d: int, value: float) -> str:
            x = d * width / max(points - 1, 1)
            return f"{x:.1f},{height - value * height / total:.1f}"

        upper = [point(d, tops[d]) for d in range(points)]
        lower = [point(d, bottoms[d]) for d in reversed(range(points))]
        colour = COLOURS[i % len(COLOURS)]
        layers.append(
            f"<polygon points='{' '.join(upper + lower)}' fill='{colour}'>"
            f"<title>{html.escape(stage)}</title></polygon>"
        )
        bottoms = tops
    shown = {stage for day in result.daily for stage, n in day.items() if n}
    legend = "".join(
        f"<span style='color:{COLOURS[i % len(COLOURS)]}'>&#9632; {html.escape(s)}</span> "
        for i, s in enumerate(result.stages)
        if s in shown
    )
    axis = (
        f"<p class='note'>Contacts in each stage at the end of each day, stacked, from day 1 "
        f"(left) to day {days} (right); the top edge is {total} contacts.</p>"
    )
    return (
        f"<svg width='{width}' height='{height}' role='img'>{''.join(layers)}</svg>"
        f"<p>{legend}</p>{axis}"
    )


def _goals_table(result: SimulationResult) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{entered}</td><td>-</td><td>no goal</td>"
        f"<td>{result.running.get(name, 0)}</td></tr>"
        if name in result.without_goal
        else f"<tr><td>{html.escape(name)}</td><td>{entered}</td><td>{converted}</td>"
        f"<td>{_pct(converted / entered if entered else None)}</td>"
        f"<td>{result.running.get(name, 0)}</td></tr>"
        for name, (entered, converted) in result.goals.items()
    )
    return (
        "<table><tr><th>workflow</th><th>entered</th><th>converted</th><th>rate</th>"
        f"<th>still running</th></tr>{rows}</table><p>Enrollments still running when the run "
        "ended count as not converted: a short run understates conversion.</p>"
    )


def _failed_table(result: SimulationResult) -> str:
    if not result.failed:
        return ""
    return (
        "<h3>Actions that failed</h3><p class='note'>Not in the figures above: fix the "
        "workflow or template and run again.</p>"
        + _html_table(
            ["workflow:step", "failed", "first error"],
            [[key, str(n), error] for key, (n, error) in result.failed.items()],
        )
    )


def _still(result: SimulationResult, workflow: str) -> str:
    running = result.running.get(workflow, 0)
    return f", {running} running" if running else ""


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of already escaped headers and plain cells."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
