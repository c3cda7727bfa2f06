"""A transaction's copy of its contacts' enrollments, read once per contact.

Processing one event asks for the contact's live enrollments several times (before the
event's reactions, on a stage change, when a condition turns true) and ``start_enrollment``
asks for a workflow's latest entry. In a pipeline job the contact's row lock is held for the
whole transaction and every enrollment it writes goes through this session, so those rows
are read once, the first time they are needed, and kept in ``session.info``:

- the contact's live enrollments and, per workflow, its latest entry (the re-entry rules
  need nothing older; an ended one as a plain ``PastEntry`` row), in id order;
- ``start_enrollment`` appends the enrollment it creates;
- statuses are read from the objects themselves when asked, so an enrollment ended in this
  transaction is no longer live, as the query would have said after its autoflush;
- any rollback (a savepoint included) forgets everything, so an enrollment written in a
  rolled-back savepoint is never seen again.

Only a transaction that opts in (``keep_enrollments``) uses it, and only until it ends; any
other caller reads the database each time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import event, func
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction, aliased
from sqlmodel import Session, col, select

from engine.db import one_of_param
from engine.models import Enrollment, EnrollmentStatus

LIVE = (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING)
_KEY = "journeyline.known_enrollments"


@dataclass(frozen=True, slots=True)
class PastEntry:
    """A workflow's latest entry for a contact, ended: what the re-entry rules read of it,
    as a plain row. Nothing writes an ended enrollment, and a contact has one per workflow
    it ever entered, so loading them as ORM objects cost most of a job's load."""

    id: int
    contact_id: int
    workflow: str
    entry: int
    status: str
    started_at: datetime


Known = Enrollment | PastEntry

_older = aliased(Enrollment)
_latest_entry = (
    select(func.max(_older.entry))
    .where(_older.contact_id == Enrollment.contact_id, _older.workflow == Enrollment.workflow)
    .scalar_subquery()
)
_PAST_COLUMNS = tuple(col(getattr(Enrollment, name)) for name in PastEntry.__dataclass_fields__)


@cache
def _load_statements(dialect: str) -> tuple[Any, Any]:
    """For a set of contacts: their live enrollments (objects), and each workflow's latest
    entry when it has ended (rows)."""
    contacts = one_of_param(col(Enrollment.contact_id), "contact_ids", dialect=dialect)
    live = select(Enrollment).where(contacts, col(Enrollment.status).in_(LIVE))
    past = select(*_PAST_COLUMNS).where(
        contacts, col(Enrollment.status).not_in(LIVE), col(Enrollment.entry) == _latest_entry
    )
    return live, past


def keep_enrollments(session: Session) -> None:
    """Opt this transaction in: its contacts' enrollments are read once and kept."""
    session.info.setdefault(_KEY, {})


def load(session: Session, contact_ids: Iterable[int]) -> None:
    """Read the enrollments of these contacts in two statements (if the transaction opted in)."""
    known: dict[int, list[Known]] | None = session.info.get(_KEY)
    if known is None:
        return
    missing = sorted({c for c in contact_ids if c not in known})
    if not missing:
        return
    for contact_id in missing:
        known[contact_id] = []
    dialect = session.get_bind().dialect.name
    statements = _load_statements(dialect)
    params = {"contact_ids": missing}
    for enrollment in session.scalars(statements[0], params):
        known[enrollment.contact_id].append(enrollment)
    for row in session.execute(statements[1], params):
        known[row.contact_id].append(PastEntry(*row))
    for contact_id in missing:
        known[contact_id].sort(key=_id)


def _id(enrollment: Known) -> int:
    assert enrollment.id is not None  # loaded rows only
    return enrollment.id


def known_for(session: Session, contact_id: int) -> list[Known] | None:
    """This contact's live enrollments and latest entry per workflow (ended ones as
    ``PastEntry`` rows), in id order; None when the transaction did not opt in."""
    known: dict[int, list[Known]] | None = session.info.get(_KEY)
    if known is None:
        return None
    if contact_id not in known:
        load(session, (contact_id,))
    return known[contact_id]


def added(session: Session, enrollment: Enrollment) -> None:
    """``enrollment`` was just started (written at the next flush): keep it with its contact's."""
    known: dict[int, list[Known]] | None = session.info.get(_KEY)
    if known is not None and enrollment.contact_id in known:
        known[enrollment.contact_id].append(enrollment)


@event.listens_for(OrmSession, "after_soft_rollback")
def _forget_on_rollback(session: OrmSession, _previous: Any) -> None:
    known: dict[int, list[Known]] | None = session.info.get(_KEY)
    if known:
        known.clear()


@event.listens_for(OrmSession, "after_transaction_end")
def _end_with_the_transaction(session: OrmSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_KEY, None)
