"""A batch transaction's reads of its contacts' past events, one statement for them all.

Conditions such as ``did_event`` and ``engaged`` read a contact's past events. In a job that
processes a hundred contacts that was a round trip per contact and condition: on
PostgreSQL under load, the largest single wait of the end-to-end pipeline (about 40% of a
worker's samples in ``py-spy``). A batch job names its contacts (``batch``); the first
condition that asks for events of some types since some time then reads them for every
contact of the batch in one statement, and later asks for the same types are answered from
that read:

- an ask for a later ``since`` than the read is filtered in Python; an earlier one reads
  again (for the whole batch, with the earlier bound);
- processing never writes or changes what is read here (it only sets an event's status),
  so nothing the transaction does makes the read stale. Events other transactions commit
  while the job runs are pending for a later job either way;
- the read is forgotten when the transaction ends.

A transaction that does not opt in, or a contact outside the batch, gets the same read for
that one contact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, Literal

from sqlalchemy import bindparam, event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session, col, select

from engine.db import one_of_param
from engine.models import Event

_KEY = "journeyline.known_events"

When = Literal["occurred_at", "received_at"]


@dataclass
class _Read:
    since: datetime | None  # None: every event of the types
    rows: dict[int, list[tuple[int, datetime, dict[str, Any]]]] = field(default_factory=dict)


@dataclass
class _Known:
    contacts: list[int]
    members: frozenset[int]
    reads: dict[tuple[tuple[str, ...], When], _Read] = field(default_factory=dict)
    statements: int = 0  # how many reads this transaction made (for tests)


def batch(session: Session, contact_ids: Iterable[int]) -> None:
    """Opt this transaction in for these contacts (a batch job's, locked by it)."""
    ids = sorted(set(contact_ids))
    session.info[_KEY] = _Known(contacts=ids, members=frozenset(ids))


def statements(session: Session) -> int:
    """How many batch reads this transaction has made so far."""
    known: _Known | None = session.info.get(_KEY)
    return known.statements if known is not None else 0


def properties_since(
    session: Session,
    contact_id: int,
    types: Sequence[str],
    *,
    when: When = "occurred_at",
    since: datetime | None = None,
    after: int | None = None,
    upto: int | None = None,
) -> list[dict[str, Any]]:
    """The properties of this contact's events of ``types`` whose ``when`` is at or after
    ``since`` (every one with None) and whose id is above ``after`` and at most ``upto``
    (any with None), in id order: from the batch's read when the transaction opted in and
    the contact is in its batch, else read for this contact alone. ``upto`` is for asking
    what was true before an event (the one before it) or with it (its own id), when later
    ones are already stored; ``after`` for what came in after a given event."""
    key = (tuple(sorted(types)), when)
    known: _Known | None = session.info.get(_KEY)
    if known is None or contact_id not in known.members:
        mine = _load(session, [contact_id], key[0], when, since).rows.get(contact_id, [])
    else:
        read = known.reads.get(key)
        if read is None or not _covers(read.since, since):
            read = _load(session, known.contacts, key[0], when, since)
            known.reads[key] = read
            known.statements += 1
        mine = read.rows.get(contact_id, [])
    return [
        properties
        for id, at, properties in mine
        if (since is None or at >= since)
        and (upto is None or id <= upto)
        and (after is None or id > after)
    ]


def _covers(read_since: datetime | None, since: datetime | None) -> bool:
    if read_since is None:
        return True
    return since is not None and since >= read_since


@cache
def _statement(dialect: str, when: When | None) -> Any:
    """The batch read, bounded by ``when`` (None: every event of the types); built once per
    dialect and bound (statement construction is a visible share of a job)."""
    query = select(
        col(Event.contact_id),
        col(Event.id),
        col(getattr(Event, when or "occurred_at")),
        col(Event.properties),
    )
    query = query.where(
        one_of_param(col(Event.contact_id), "contact_ids", dialect=dialect),
        one_of_param(col(Event.type), "types", dialect=dialect),
    )
    if when is not None:
        query = query.where(col(getattr(Event, when)) >= bindparam("since"))
    return query.order_by(col(Event.id))


def _load(
    session: Session,
    contact_ids: list[int],
    types: tuple[str, ...],
    when: When,
    since: datetime | None,
) -> _Read:
    params: dict[str, Any] = {"contact_ids": contact_ids, "types": list(types)}
    bound: When | None = None if since is None else when
    if since is not None:
        params["since"] = since
    statement = _statement(session.get_bind().dialect.name, bound)
    read = _Read(since=since)
    with session.no_autoflush:  # nothing this transaction writes is read here
        for contact_id, id, at, properties in session.execute(statement, params):
            read.rows.setdefault(contact_id, []).append((id, at, properties))
    return read


@event.listens_for(OrmSession, "after_transaction_end")
def _end_with_the_transaction(session: OrmSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_KEY, None)
