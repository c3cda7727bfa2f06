"""What held an email back, in words, as the CLI and a contact's timeline say it.

A guard rail that defers an email (a frequency cap, quiet hours, a send window) appends a
hold to its action's ``reason["held"]``. ``hold_note`` says what holds a pending email now;
``past_holds`` what held one that has since gone (or was skipped, or failed).
"""

from __future__ import annotations

from datetime import datetime

from engine.models import Action, ActionStatus


def hold_note(action: Action, *, now: datetime | None = None) -> str | None:
    """What holds a pending action back, as the CLI and the timeline say it: "held until
    2026-01-05 08:00 UTC: quiet hours 21:00-08:00 (Pacific/Auckland)", from the last guard
    rail that deferred it. None when nothing does (or, given ``now``, no longer does)."""
    held = action.reason.get("held") if action.status == ActionStatus.PENDING else None
    if not held:
        return None
    last = held[-1]
    until = datetime.fromisoformat(last["until"])
    if now is not None and until <= now:
        return None
    return f"held until {until:%Y-%m-%d %H:%M} UTC: {last['rule']}"


def past_holds(action: Action) -> str | None:
    """What held an email back before it was sent (or skipped, or failed), as its timeline
    entry says it: "held until 2026-01-06 20:30 UTC: frequency cap: 1 per 1 day", each rule
    in turn ("..., then until ...: quiet hours ..."; one rule holding it again and again
    once, with its last time). None for a pending one (``hold_note`` says what holds it
    now) or one never held."""
    held = action.reason.get("held") if action.status != ActionStatus.PENDING else None
    if not held:
        return None
    holds: list[tuple[str, str]] = []  # (rule, until)
    for hold in held:
        if holds and holds[-1][0] == hold["rule"]:
            holds[-1] = (hold["rule"], hold["until"])
        else:
            holds.append((hold["rule"], hold["until"]))
    return "held " + ", then ".join(
        f"until {datetime.fromisoformat(until):%Y-%m-%d %H:%M} UTC: {rule}" for rule, until in holds
    )
