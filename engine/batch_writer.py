"""The statements that write a batch of events, one per step, per database.

``recording_batch.record_batch`` decides what to write; a ``BatchWriter`` writes it. Two writers:

- ``CoreWriter`` (SQLite, and the reference): SQLAlchemy Core ``INSERT ... ON CONFLICT DO
  NOTHING RETURNING`` over many rows and ``IN (...)`` lookups;
- ``PostgresWriter``: the same statements with a short, fixed SQL text whatever the batch
  size: the rows go as one JSON document spread by ``json_to_recordset`` and lookups are
  ``= ANY(:array)``. Many-row statements with a placeholder per value were re-rendered by
  SQLAlchemy and re-parsed by psycopg on each request (~40% of a request's CPU); one array
  parameter per column cost ~15% more CPU than one ``json.dumps`` of the rows.

Both return the same things in the same order; ``tests/test_api_batch.py`` checks a batch
recorded in bulk against the same events recorded one by one on each database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import String, any_, bindparam, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from engine.clock import ensure_utc
from engine.models import Contact, Event


class BatchWriter(Protocol):
    """Every write takes ``rows`` (the columns that differ from row to row) and ``common``
    (the values every row shares), so a statement's shape does not depend on the data."""

    def find_events(self, session: Session, keys: list[str]) -> Sequence[tuple[str, int, int]]:
        """``(idempotency_key, event id, contact id)`` of the stored events among ``keys``."""
        ...

    def find_contacts(
        self, session: Session, emails: list[str], *, lock: bool = False
    ) -> list[Contact]:
        """The stored contacts among ``emails`` (ORM objects: changes to them are saved).
        ``lock``: read anew and locked (``FOR NO KEY UPDATE``, in id order, as the pipeline locks
        them), for a caller about to change them."""
        ...

    def find_contact_ids(self, session: Session, emails: list[str]) -> dict[str, int]:
        """``{email: id}`` of the stored contacts among ``emails`` (plain rows)."""
        ...

    def insert_contacts(
        self, session: Session, rows: list[dict[str, Any]], common: dict[str, Any]
    ) -> dict[str, int]:
        """Insert the rows whose email is not taken; ``{email: id}`` of those inserted."""
        ...

    def insert_events(
        self,
        session: Session,
        rows: list[dict[str, Any]],
        common: dict[str, Any],
        *,
        skip_taken_keys: bool,
    ) -> dict[str, int]:
        """Insert event rows in order; ``{idempotency_key: id}`` of those inserted. With
        ``skip_taken_keys`` a row whose key is taken is left out; otherwise it raises (and
        nothing is returned)."""
        ...


class CoreWriter:
    """Many-row SQLAlchemy Core statements; ``insert_into`` is the dialect's ``insert``."""

    def __init__(self, insert_into: Any) -> None:
        self.insert_into = insert_into

    def find_events(self, session: Session, keys: list[str]) -> Sequence[tuple[str, int, int]]:
        statement = select(Event.idempotency_key, Event.id, Event.contact_id).where(
            col(Event.idempotency_key).in_(keys)
        )
        return session.exec(statement).all()  # type: ignore[return-value]

    def find_contacts(
        self, session: Session, emails: list[str], *, lock: bool = False
    ) -> list[Contact]:
        statement = select(Contact).where(col(Contact.email).in_(emails))
        return list(session.exec(_locked(statement) if lock else statement))

    def find_contact_ids(self, session: Session, emails: list[str]) -> dict[str, int]:
        table: Any = Contact.__table__  # type: ignore[attr-defined]
        statement = select(table.c.email, table.c.id).where(table.c.email.in_(emails))
        return dict(session.connection().execute(statement).all())  # type: ignore[arg-type]

    def insert_contacts(
        self, session: Session, rows: list[dict[str, Any]], common: dict[str, Any]
    ) -> dict[str, int]:
        table: Any = Contact.__table__  # type: ignore[attr-defined]
        statement = (
            self.insert_into(table)
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(table.c.email, table.c.id)
        )
        return dict(session.execute(statement, [{**common, **row} for row in rows]).all())  # type: ignore[arg-type]

    def insert_events(
        self,
        session: Session,
        rows: list[dict[str, Any]],
        common: dict[str, Any],
        *,
        skip_taken_keys: bool,
    ) -> dict[str, int]:
        table: Any = Event.__table__  # type: ignore[attr-defined]
        values = [{**common, **row} for row in rows]
        if not skip_taken_keys:
            session.execute(insert(table), values)
            return {}
        statement = (
            self.insert_into(table)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(table.c.idempotency_key, table.c.id)
        )
        return dict(session.execute(statement, values).all())  # type: ignore[arg-type]


# PostgreSQL types of the columns a batch writes (what the migrations create).
PG_TYPES = {
    "email": "varchar",
    "timezone": "varchar",
    "attributes": "json",
    "external_ids": "json",
    "stage": "varchar",
    "score": "integer",
    "subscription_status": "varchar",
    "version": "integer",
    "stage_entered_at": "timestamp",
    "created_at": "timestamp",
    "updated_at": "timestamp",
    "contact_id": "integer",
    "type": "varchar",
    "properties": "json",
    "source": "varchar",
    "idempotency_key": "varchar",
    "status": "varchar",
    "error": "varchar",
    "lease_until": "timestamp",
    "occurred_at": "timestamp",
    "received_at": "timestamp",
    "processed_at": "timestamp",
    "attributes_before": "json",
}


def _recordset_insert(table: str, varying: list[str], common: list[str], tail: str) -> Any:
    """``INSERT INTO table (...) SELECT ... FROM json_to_recordset(:rows)``: the varying
    columns of every row in one JSON document, each common column one scalar parameter."""
    picks = [f"r.{c}" for c in varying] + [f"CAST(:{c} AS {PG_TYPES[c]})" for c in common]
    record = ", ".join(f"{c} {PG_TYPES[c]}" for c in varying)
    return text(
        f"INSERT INTO {table} ({', '.join(varying + common)}) "
        f"SELECT {', '.join(picks)} FROM json_to_recordset(CAST(:rows AS json)) AS r({record}) "
        f"{tail}"
    )


def _naive_utc(value: datetime | None) -> datetime | None:
    """What ``UTCDateTime`` stores."""
    return None if value is None else ensure_utc(value).replace(tzinfo=None)


def _scalar(column: str, value: Any) -> Any:
    """A common value as a parameter: JSON as text, datetimes as naive UTC."""
    if PG_TYPES[column] == "json":
        return json.dumps(value)
    if PG_TYPES[column] == "timestamp":
        return _naive_utc(value)
    return value


def _rows_document(rows: list[dict[str, Any]], varying: list[str]) -> str:
    """The rows as one JSON array (datetimes as naive-UTC ISO 8601, which PostgreSQL reads
    back exactly): one ``json.dumps`` in C instead of a psycopg array dump per column."""
    times = [c for c in varying if PG_TYPES[c] == "timestamp"]
    if times:
        rows = [dict(row) for row in rows]
        for row in rows:
            for c in times:
                value = _naive_utc(row[c])
                row[c] = None if value is None else value.isoformat()
    return json.dumps(rows)


_KEYS = bindparam("keys", type_=postgresql.ARRAY(String))
_EMAILS = bindparam("emails", type_=postgresql.ARRAY(String))


class PostgresWriter:
    """One short statement per step whatever the batch size: the rows go as one JSON
    document spread by ``json_to_recordset``, and lookups are ``= ANY(array)``."""

    def __init__(self) -> None:
        self._statements: dict[tuple[Any, ...], Any] = {}

    def find_events(self, session: Session, keys: list[str]) -> Sequence[tuple[str, int, int]]:
        statement = select(Event.idempotency_key, Event.id, Event.contact_id).where(
            col(Event.idempotency_key) == any_(_KEYS)
        )
        found = session.exec(statement, params={"keys": keys}).all()  # type: ignore[call-overload]
        return found  # type: ignore[return-value]

    def find_contacts(
        self, session: Session, emails: list[str], *, lock: bool = False
    ) -> list[Contact]:
        statement = select(Contact).where(col(Contact.email) == any_(_EMAILS))
        if lock:
            statement = _locked(statement)
        return list(session.exec(statement, params={"emails": emails}))  # type: ignore[call-overload]

    def find_contact_ids(self, session: Session, emails: list[str]) -> dict[str, int]:
        table: Any = Contact.__table__  # type: ignore[attr-defined]
        statement = select(table.c.email, table.c.id).where(table.c.email == any_(_EMAILS))
        found = session.connection().execute(statement, {"emails": emails}).all()
        return dict(found)  # type: ignore[arg-type]

    def insert_contacts(
        self, session: Session, rows: list[dict[str, Any]], common: dict[str, Any]
    ) -> dict[str, int]:
        tail = "ON CONFLICT (email) DO NOTHING RETURNING email, id"
        result = self._insert(session, "contacts", rows, common, tail)
        return dict(result.all())

    def insert_events(
        self,
        session: Session,
        rows: list[dict[str, Any]],
        common: dict[str, Any],
        *,
        skip_taken_keys: bool,
    ) -> dict[str, int]:
        if not skip_taken_keys:
            self._insert(session, "events", rows, common, "")
            return {}
        tail = "ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, id"
        return dict(self._insert(session, "events", rows, common, tail).all())

    def _insert(
        self,
        session: Session,
        table: str,
        rows: list[dict[str, Any]],
        common: dict[str, Any],
        tail: str,
    ) -> Any:
        varying = list(rows[0])
        shape = (table, tuple(varying), tuple(common), tail)
        statement = self._statements.get(shape)
        if statement is None:
            statement = _recordset_insert(table, varying, list(common), tail)
            self._statements[shape] = statement
        params = {c: _scalar(c, v) for c, v in common.items()}
        params["rows"] = _rows_document(rows, varying)
        return session.execute(statement, params)


_POSTGRES = PostgresWriter()


def writer_for(session: Session) -> BatchWriter | None:
    """The writer for ``session``'s database, or None where batches are written one by one."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return _POSTGRES
    if name == "sqlite":
        return CoreWriter(sqlite.insert)
    return None


def _locked(statement: Any) -> Any:
    """``statement`` (of contacts) locking its rows in id order and reading them anew, even
    those this session has loaded already: their attributes as committed now."""
    return (
        statement.order_by(col(Contact.id))
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
