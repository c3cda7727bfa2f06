"""An enrollment's trail: the decisions it made, noted in its context.

Every decision the executor makes for an enrollment (a branch taken, a variant drawn, a
step skipped, a wait over or moved) is written to the enrollment's ``context["trail"]``,
and the timeline shows it (engine/timeline.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.models import Enrollment
from engine.steps import Node


def note_on_trail(enrollment: Enrollment, node: Node, now: datetime, note: str) -> None:
    """Note ``note`` on the trail of ``enrollment``, at ``node``'s step."""
    enrollment.context = with_trail(enrollment.context, node.id, now, note)


def with_trail(
    context: dict[str, Any], step: str, now: datetime, note: str, **marks: Any
) -> dict[str, Any]:
    """``context`` with a note on ``step`` added to its trail (the last fifty kept);
    ``marks`` are extra keys of the note (``kind="paused"``: the timeline shows it)."""
    trail = [
        *context.get("trail", []),
        {"step": step, "at": now.isoformat(), "note": note, **marks},
    ]
    return {**context, "trail": trail[-50:]}
