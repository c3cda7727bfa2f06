"""What an input changed in a contact's attributes, and the attributes as they stood then.

An event's ``attributes`` are merged into its contact when the event is recorded, before the
pipeline applies it; a contacts API or import update (``contact.updated``) is merged at once
too. The pipeline still has to tell "before this event" from "after it" (a segment is
joined, a condition turns true, at one event), so the event keeps what the merge replaced,
in its ``attributes_before`` column:

    {"was": {"plan": "free"}, "absent": ["coupon"]}

``was`` holds the previous value of each key the merge changed (``null`` included: a key
that held null), ``absent`` the keys it added. Only changed keys are kept, and an event that
changed nothing keeps ``NULL``. ``AttributeViews`` reads a contact's attributes as they
stood before or after each of its pending events, from these.

A contacts API or import update that changes the contact's time zone records it too, as
``"timezone": ["Asia/Tokyo", "America/New_York"]`` (before, after), so a change of the zone
alone is a ``contact.updated`` event the pipeline applies (it moves the waits for a local
time: ``waits.follow_zone_changes``) and the timeline shows. It is not an attribute:
``changed_keys`` and ``AttributeViews`` leave it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.models import Contact

WAS = "was"
ABSENT = "absent"
ZONE = "timezone"
_MISSING = object()


def change_of(current: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict | None:
    """What merging ``given`` into ``current`` replaces (``attributes_before``), or None
    when it changes nothing. O(keys given)."""
    if not given:
        return None
    was: dict[str, Any] = {}
    absent: list[str] = []
    for key, value in given.items():
        old = current.get(key, _MISSING)
        if old is _MISSING:
            absent.append(key)
        elif old is not value and old != value:  # ``{**current, **given} != current``
            was[key] = old
    if not was and not absent:
        return None
    found: dict[str, Any] = {}
    if was:
        found[WAS] = was
    if absent:
        found[ABSENT] = absent
    return found


def with_zone_change(before: dict[str, Any] | None, was: str, now: str) -> dict[str, Any]:
    """``before`` (a change of attributes, or None) with the time zone changed too."""
    return {**(before or {}), ZONE: [was, now]}


def changed_keys(before: Mapping[str, Any] | None) -> list[str]:
    """The keys a change (an ``attributes_before``) names, in the order it names them."""
    if not before:
        return []
    return [*before.get(WAS, {}), *before.get(ABSENT, ())]


def describe_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``plan 'free' -> 'pro', seats (unset) -> 3``: a change and the values it set (and
    ``time zone 'UTC' -> 'Europe/Paris'``)."""
    was = before.get(WAS, {})
    parts = []
    for key in changed_keys(before):
        old = repr(was[key]) if key in was else "(unset)"
        new = repr(after[key]) if key in after else "?"
        parts.append(f"{key} {old} -> {new}")
    zone = before.get(ZONE)
    if isinstance(zone, list) and len(zone) == 2:
        parts.append(f"time zone {zone[0]!r} -> {zone[1]!r}")
    return ", ".join(parts)


class AttributeViews:
    """A contact's attributes as they stood before and after each of its pending events.

    The contact's stored attributes already hold every recorded event's change, pending
    ones included. The view at a point undoes, latest first, the changes of the pending
    events after it, so an event's "before" sees neither its own change nor a later one's
    and its "after" sees its own but not the next event's. A key the pipeline wrote since
    these views were made (a ``set_attribute`` step) is newer than any recorded change:
    it is never undone. With no change to undo a view is the contact's own dict, uncopied.
    """

    def __init__(
        self, contact: Contact, changes: Sequence[tuple[int, Mapping[str, Any]]] = ()
    ) -> None:
        """``changes``: ``(event id, attributes_before)`` of the contact's pending events
        that changed something, in id order."""
        self.contact = contact
        self.changes = [c for c in changes if c[1]]
        self._start = contact.attributes

    def before(self, event_id: int) -> Mapping[str, Any]:
        """As they stood before event ``event_id``."""
        return self._undo(event_id)

    def after(self, event_id: int) -> Mapping[str, Any]:
        """As they stood after event ``event_id`` (and before the next one)."""
        return self._undo(event_id + 1)

    def _undo(self, first: int) -> Mapping[str, Any]:
        current: Mapping[str, Any] = self.contact.attributes
        undone = [before for event_id, before in self.changes if event_id >= first]
        if not undone:
            return current
        start = self._start
        view = dict(current)
        for before in reversed(undone):  # the earliest change's "before" wins
            for key, value in before.get(WAS, {}).items():
                if _untouched(key, current, start):
                    view[key] = value
            for key in before.get(ABSENT, ()):
                if _untouched(key, current, start):
                    view.pop(key, None)
        return view


def _untouched(key: str, current: Mapping[str, Any], start: Mapping[str, Any]) -> bool:
    """Whether the pipeline has left ``key`` as it was when the views were made."""
    return current is start or current.get(key, _MISSING) == start.get(key, _MISSING)
