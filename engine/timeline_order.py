"""Where a timeline entry stands among the entries of its instant: causes before effects.

Entries at the same instant sort in causal order, grouped by the event that caused them:
the event, the stage change it caused, then each enrollment it started or ran on: its
entry, then its decisions (trail notes) and the actions it wrote in the order of their
steps; an action outside any workflow last. A contact's creation without an event (an
import) comes before everything else of its instant. Entries with no known cause come
last in their instant (a scheduler's wake-up, an exit, an email sent later than it was
written: held, retried, withdrawn), each enrollment's together: its decisions and the
actions it wrote, its end, then its emails that went (or were skipped) later than written
(a withdrawal after the goal that ended it).

This only holds if an event stands at the instant its effects were written: at its
``occurred_at`` (stamped when it was recorded, or by its source) it would come before the
effects of the events processed ahead of it, a new contact's first event before the
contact's own creation (a virtual clock hides this: there the two instants are one).

An entry's ``order`` (engine/timeline.py) is (group: an event id, ``CREATION`` or
``NO_CAUSE``; rank; the row it belongs to; for an enrollment's entries, their phase, the
position of their step in the workflow and their order as written). An enrollment's runs
(``Runs``) say which group each decision and action at an instant belongs to.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

CREATION = -1  # the group of a contact's creation without an event: first in its instant
NO_CAUSE = 2**62  # the group of entries with no known cause: last in their instant
EVENT, STAGE, ENROLLMENT, OTHER_ACTION = range(4)  # rank in a group
ENTERED, RAN, ENDED, LATER = range(4)  # phase among an enrollment's entries in a group
UNPLACED = -1  # the step of a note whose step is not known: before the actions
LAST = 2**31  # a note without a time: after what its enrollment did at that instant


Runs = dict[datetime, list[tuple[int, int]]]
"""The runs of an enrollment at each instant it ran: (the position of the step each began
at, the group of what ran it), in order. Its start is run by its cause; a later run by the
event a note names ("event arrived first (event 12)") or by nothing known (a scheduler's
wake-up)."""


_NAMES_AN_EVENT = re.compile(r"\(event (\d+)\)$")


def run_of(note: dict[str, Any], known: int | None) -> int:
    """The group of the run that wrote ``note``: the event it names (``event_id``, or "(event
    12)" in its text) if it was run by one, else the run ``known`` at its instant so far,
    else none (a scheduler's wake-up). Never before that run: runs follow each other."""
    named = note.get("event_id")
    if not isinstance(named, int):
        match = _NAMES_AN_EVENT.search(str(note.get("note", "")))
        named = int(match.group(1)) if match else None
    if named is None:
        return NO_CAUSE if known is None else known
    return named if known is None else max(known, named)


def run_at(runs: Runs, at: datetime, position: int | None) -> int:
    """The group of the run that wrote the action at ``position`` (None: not known, the
    last run) at instant ``at``; none known (a wake-up noting nothing): ``NO_CAUSE``."""
    bounds = runs.get(at, [])
    began = [group for start, group in bounds if position is None or start <= position]
    return began[-1] if began else NO_CAUSE
