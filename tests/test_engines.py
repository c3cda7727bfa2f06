"""What ``make_engine`` sets on a SQLite connection (``durable=False`` for throw-away
files), and how ``UTCDateTime`` stores and reads SQLite's text datetimes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import StatementError

from engine.clock import ensure_utc
from engine.db import UTCDateTime, make_engine


def _pragmas(url: str, **options: bool) -> dict[str, object]:
    db = make_engine(url, **options)
    try:
        with db.connect() as conn:
            return {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys")
            }
    finally:
        db.dispose()


def test_a_sqlite_file_is_wal_with_normal_syncs_by_default(tmp_path: Path) -> None:
    found = _pragmas(f"sqlite:///{tmp_path}/kept.db")
    assert found == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1}


def test_a_throw_away_sqlite_file_keeps_its_journal_in_memory_without_syncs(
    tmp_path: Path,
) -> None:
    found = _pragmas(f"sqlite:///{tmp_path}/scratch.db", durable=False)
    assert found == {"journal_mode": "memory", "synchronous": 0, "foreign_keys": 1}
    # and still one transaction at a time, rolled back whole when it fails
    db = make_engine(f"sqlite:///{tmp_path}/scratch.db", durable=False)
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    with pytest.raises(RuntimeError), db.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("the transaction fails")
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
    db.dispose()


def test_durable_false_is_refused_for_a_server_database() -> None:
    with pytest.raises(ValueError, match="throw-away SQLite"):
        make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test", durable=False)


_INSTANTS = [
    datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # no microseconds: still six digits stored
    datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Madrid")),  # 01:30 UTC
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Madrid")),
    datetime(2026, 1, 5, 9, 0, 0, 17),  # naive: taken as UTC
    datetime(999, 12, 31, 23, 59, tzinfo=UTC),
]


@pytest.mark.parametrize("instant", _INSTANTS, ids=lambda d: d.isoformat())
def test_sqlite_datetimes_are_stored_as_the_dialect_formats_them_and_read_back_as_utc(
    tmp_path: Path, instant: datetime
) -> None:
    """One processor each way (engine/db.py) must store exactly the text SQLAlchemy's own
    SQLite ``DATETIME`` would (stored text is compared and sorted as time) and read it back
    as the same aware UTC instant."""
    table = Table("instants", MetaData(), Column("id", Integer, primary_key=True),
                  Column("at", UTCDateTime))  # fmt: skip
    db = make_engine(f"sqlite:///{tmp_path}/t.db")
    table.create(db)
    naive_utc = ensure_utc(instant).replace(tzinfo=None)
    expected_text = sqlite.DATETIME().bind_processor(db.dialect)(naive_utc)  # type: ignore[misc]
    with db.begin() as conn:
        conn.execute(table.insert(), {"at": instant})
        assert conn.execute(text("SELECT at FROM instants")).scalar() == expected_text
        back = conn.execute(select(table.c.at)).scalar()
        assert back == ensure_utc(instant) and back.tzinfo is UTC
        # A bound parameter in a comparison goes through the same processor.
        assert conn.execute(select(table.c.id).where(table.c.at == instant)).scalar() == 1
    db.dispose()


def test_sqlite_reads_text_written_by_others_and_refuses_a_date(tmp_path: Path) -> None:
    table = Table("instants", MetaData(), Column("id", Integer, primary_key=True),
                  Column("at", UTCDateTime))  # fmt: skip
    db = make_engine(f"sqlite:///{tmp_path}/t.db")
    table.create(db)
    with db.begin() as conn:
        conn.execute(text("INSERT INTO instants (at) VALUES ('2026-01-05 09:00:00')"))
        conn.execute(text("INSERT INTO instants (at) VALUES ('2026-01-05 10:30:00+01:00')"))
        conn.execute(text("INSERT INTO instants (at) VALUES ('2026-01-05')"))
        found = conn.execute(select(table.c.at).order_by(table.c.id)).scalars().all()
        assert found == [
            datetime(2026, 1, 5, 9, tzinfo=UTC),
            datetime(2026, 1, 5, 9, 30, tzinfo=UTC),  # its offset honoured
            datetime(2026, 1, 5, tzinfo=UTC),
        ]
        assert all(at.tzinfo is UTC for at in found)
        with pytest.raises(StatementError, match="takes a datetime, not date"):
            conn.execute(table.insert(), {"at": date(2026, 1, 5)})
    db.dispose()
