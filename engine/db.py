"""Database engines and transactions.

SQLite is opened in WAL mode and every transaction starts with ``BEGIN IMMEDIATE``, so
writers queue on the database lock instead of failing when they upgrade a read lock.
PostgreSQL serialises per contact with ``SELECT ... FOR NO KEY UPDATE`` (``lock_contact``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, any_, bindparam, event, literal, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import InsertmanyvaluesSentinelOpts
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Session, create_engine

from engine import flush_shape, sequence_ids  # noqa: F401  (register their flush hooks)
from engine.clock import ensure_utc
from engine.db_writers import mark_serialised
from engine.errors import ConfigurationError
from engine.urls import redact_url


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, on every backend alike."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # the common case: one copy, not two
            return value.replace(tzinfo=None)
        return ensure_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return ensure_utc(value)

    # On SQLite each value went through two processors in turn (ours above, then the
    # dialect's DATETIME text formatting or parsing), about a quarter of writing a row. One
    # function each way does both, with the dialect's storage format unchanged:
    # ``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC (stored text sorts as time).

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None] | None:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime
        return super().result_processor(dialect, coltype)


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"a UTCDateTime column takes a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # "YYYY-MM-DD HH:MM:SS.ffffff+00:00" without its offset: cheaper than a naive copy first.
    return value.isoformat(" ", "microseconds")[:26]


def _sqlite_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    if len(value) > 10:  # a date and a time (a lone date would read "+00:00" as a time)
        try:  # stored without an offset: read as UTC (a sixth of the cost of replace())
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:  # written with an offset by something else
            pass
    return ensure_utc(datetime.fromisoformat(value))


CONNECT_TIMEOUT_SECONDS = 10
"""How long a new PostgreSQL connection may take before it fails (libpq's connect_timeout)."""

DEAD_PEER_SETTINGS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
"""libpq's TCP settings for a database host that vanishes while a connection is open (it
crashed, or the network between was cut): a query waiting on it fails after about a
minute instead of the kernel's defaults (two hours of silence before the first keepalive;
some fifteen minutes of retransmissions for a request nobody acknowledged). A query the
server is busy with is not cut short: its host still acknowledges and answers keepalives.
A URL's own value of any of them wins."""


def make_engine(url: str, *, durable: bool = True, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings Journeyline relies on.

    ``durable=False`` (SQLite only) is for a database thrown away when its process ends,
    such as a simulation's shard, where a crash or a power cut loses nothing anyone keeps:
    the rollback journal stays in memory and commits return before their pages reach the
    disk (``journal_mode=MEMORY``, ``synchronous=OFF``), so a commit writes its pages once,
    with no write-ahead log to copy them from later and no syncs (about 4% of a 5,000 x 20
    days simulation against WAL without syncs)."""
    # An error's text leaves out the statement's values: they are addresses, names and
    # attributes, and errors reach logs, schedule slots and the broker's retried messages.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        if in_memory:
            kwargs.setdefault("poolclass", StaticPool)
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", 30)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, wal=not in_memory, durable=durable)
        return engine
    if not durable:
        raise ValueError("durable=False is for throw-away SQLite databases only")
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:  # a pool of our sizing, unless the caller chose another
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        # A request waiting for a free connection while the database hangs gives up with
        # the connection's own timeout, not SQLAlchemy's 30 s on top of it (40 s in all).
        kwargs.setdefault("pool_timeout", CONNECT_TIMEOUT_SECONDS)
    if url.startswith("postgresql"):
        # libpq waits for a connection as long as the network lets it: a database host
        # that drops packets held a worker's, a scheduler's or a request's thread for
        # minutes. A URL's own settings win.
        connect_args = dict(kwargs.pop("connect_args", {}))
        in_url = _query_names(url)
        wanted = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **DEAD_PEER_SETTINGS}
        for name, value in wanted.items():
            if name not in in_url:
                connect_args.setdefault(name, value)
        kwargs["connect_args"] = connect_args
    try:
        return create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(_not_a_database_url(url, exc)) from exc


def _query_names(url: str) -> set[str]:
    """The names in a URL's query string (none if it does not parse: creating the engine
    then says why)."""
    try:
        return set(make_url(url).query)
    except ArgumentError:
        return set()


def _not_a_database_url(url: str, exc: Exception) -> str:
    """Why ``url`` gives no engine, for an operator: a URL that does not parse, or a kind of
    database Journeyline does not run on (SQLAlchemy's own message names a driver module)."""
    shown = redact_url(url)
    if isinstance(exc, ArgumentError):
        why = "is not a database URL"
    else:
        why = "names a database Journeyline does not run on"
    return (
        f"JOURNEYLINE_DATABASE_URL {shown!r} {why}: use sqlite:///path/to/file.db (the "
        "embedded default) or postgresql+psycopg://user@host:5432/name"
    )


def _configure_sqlite(engine: Engine, *, wal: bool, durable: bool) -> None:
    # A flush of many new rows of a table is one multi-row INSERT ... RETURNING, as on
    # PostgreSQL, instead of one INSERT per row. SQLAlchemy matches the returned ids to the
    # objects by sorting on the primary key; that is sound here because SQLite gives the rows
    # of one INSERT ascending rowids in VALUES order (max(rowid) + 1 each), which SQLAlchemy
    # does not assume for SQLite by default. ``tests/test_insert_new.py`` checks the mapping.
    engine.dialect.insertmanyvalues_implicit_sentinel = InsertmanyvaluesSentinelOpts.AUTOINCREMENT

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below be the only transaction control.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not durable:  # a scratch file: its journal in memory, no syncs
            cursor.execute("PRAGMA journal_mode=MEMORY")
            cursor.execute("PRAGMA synchronous=OFF")
        elif wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        if durable:  # deleted rows (an erased contact's) are overwritten, not left in the
            # file's free pages; FAST: without extra I/O (builds differ in their default)
            cursor.execute("PRAGMA secure_delete=FAST")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    mark_serialised(engine)


def one_of(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN (values)`` for a long list. On PostgreSQL ``column = ANY(:array)``: one
    array parameter, so the statement's text stays short and cached whatever the length,
    instead of a placeholder per value that SQLAlchemy renders and psycopg parses on every
    execution (about a fifth of a 1,000-email batch's CPU). Elsewhere a plain ``IN``."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(values), postgresql.ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]


def one_of_param(column: Any, name: str, *, dialect: str) -> ColumnElement[bool]:
    """``column IN (:name)`` for a list bound when a prebuilt statement runs: on PostgreSQL
    ``column = ANY(:name)``, one array parameter (psycopg re-parses a statement of more
    than 50 parameters on every execution); elsewhere an expanding ``IN``."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def keep(session: Session, obj: object) -> None:
    """Make sure the session writes ``obj``: ``add`` it unless the session already tracks it.
    A changed object the session loaded is written at the next flush anyway, and ``add`` on
    it still walks its cascades (about 4% of the pipeline's time when called per event)."""
    if obj not in session:
        session.add(obj)


def skip_commit_flush(session: Session) -> None:
    """Let this PostgreSQL transaction's COMMIT return before its WAL reaches disk.

    For state changes whose only consequences are later jobs (``process_contact``,
    ``wake_enrollment``): nothing outside the database acts on them until an action is
    claimed, and a claim commits synchronously, which flushes every earlier commit in WAL
    order first. A server crash can therefore only lose such a transaction before anything
    was sent on its behalf; its events and wake-ups are still pending and the sweeper runs
    them again. Saves one disk flush per job. A no-op on SQLite (already
    ``synchronous=NORMAL`` in WAL mode).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def insert_new(
    session: Session, table: Table, values: dict[str, Any], *, unique: tuple[str, ...]
) -> int | None:
    """Insert one row unless one with the same ``unique`` columns exists; return its new id,
    or None when it already existed.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` on SQLite and PostgreSQL: one round
    trip, and no savepoint to catch a unique violation from a concurrent writer.
    """
    name = session.get_bind().dialect.name
    if name == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif name == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise NotImplementedError(f"insert_new supports SQLite and PostgreSQL, not {name}")
    stmt = stmt.values(**values).on_conflict_do_nothing(index_elements=list(unique))
    row = session.execute(stmt.returning(table.c.id)).first()
    return None if row is None else int(row[0])


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
