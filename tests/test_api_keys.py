"""API keys: stored as hashes, verified in constant time, scoped, revocable; migrated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from pprint import pformat

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

import engine.api_keys as api_keys
from engine import VirtualClock, migrations
from engine.api_keys import ApiKey, InvalidApiKey, MissingScope, create_key, revoke, verify
from engine.db import make_engine, transaction
from engine.errors import ValidationError
from engine.models import metadata
from tests.support import reset_postgres


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/keys.db")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def new_key(db: Engine, clock: VirtualClock, *scopes: str) -> tuple[ApiKey, str]:
    with transaction(db) as session:
        return create_key(session, "ingest", scopes or ("events:write",), clock.now())


def test_only_the_hash_of_the_secret_is_stored(db: Engine) -> None:
    # Given a new key
    clock = VirtualClock()
    row, plaintext = new_key(db, clock, "events:write", "contacts:read")
    # Then its plaintext reads jl_<prefix>_<secret> and the row holds the prefix and a hash
    marker, prefix, secret = plaintext.split("_", 2)
    assert marker == "jl" and prefix == row.prefix and len(prefix) == 8
    assert row.hash == api_keys.hash_secret(secret) and secret not in row.hash
    assert row.scopes == ["events:write", "contacts:read"]
    assert row.created_at == clock.now() and row.revoked_at is None


def test_verify_accepts_the_key_for_its_scopes_and_notes_its_use(db: Engine) -> None:
    clock = VirtualClock()
    row, plaintext = new_key(db, clock, "events:write")
    # When it is presented for a scope it holds
    clock.advance(minutes=5)
    with transaction(db) as session:
        found = verify(session, plaintext, "events:write", clock.now())
    # Then it is that key, and its use is noted
    assert found.id == row.id
    with Session(db) as session:
        assert session.get(ApiKey, row.id).last_used_at == clock.now()  # type: ignore[union-attr]


def test_verify_rejects_unknown_malformed_and_wrong_secrets(db: Engine) -> None:
    clock = VirtualClock()
    _row, plaintext = new_key(db, clock)
    wrong_secret = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    unknown_prefix = "jl_00000000_" + plaintext.split("_", 2)[2]
    with Session(db) as session:
        for presented in (wrong_secret, unknown_prefix):
            with pytest.raises(InvalidApiKey, match="unknown"):
                verify(session, presented, "events:write", clock.now())
        with pytest.raises(InvalidApiKey, match="malformed"):
            verify(session, "not-a-key", "events:write", clock.now())


def test_a_key_without_the_scope_is_refused(db: Engine) -> None:
    clock = VirtualClock()
    _row, plaintext = new_key(db, clock, "contacts:read")
    with Session(db) as session, pytest.raises(MissingScope, match="events:write"):
        verify(session, plaintext, "events:write", clock.now())


def test_a_revoked_key_is_refused_and_revoking_again_keeps_the_first_time(db: Engine) -> None:
    clock = VirtualClock()
    row, plaintext = new_key(db, clock)
    with transaction(db) as session:
        revoked = revoke(session, row.prefix, clock.now())
    first = revoked.revoked_at
    clock.advance(days=1)
    with transaction(db) as session:
        assert revoke(session, row.prefix, clock.now()).revoked_at == first
    with Session(db) as session, pytest.raises(InvalidApiKey, match="revoked"):
        verify(session, plaintext, "events:write", clock.now())


def test_revoking_an_unknown_prefix_names_it(db: Engine) -> None:
    with transaction(db) as session, pytest.raises(ValidationError, match="abcdefgh"):
        revoke(session, "abcdefgh", VirtualClock().now())


def test_scopes_and_names_are_validated(db: Engine) -> None:
    now = VirtualClock().now()
    with transaction(db) as session:
        with pytest.raises(ValidationError, match="unknown scope") as caught:
            create_key(session, "x", ["events:write", "admin"], now)
        assert caught.value.field == "scopes"
        with pytest.raises(ValidationError, match="at least one scope"):
            create_key(session, "x", [], now)
        with pytest.raises(ValidationError) as named:
            create_key(session, "  ", ["events:write"], now)
        assert named.value.field == "name"


def test_last_used_is_written_at_most_once_a_minute(db: Engine) -> None:
    clock = VirtualClock()
    _row, plaintext = new_key(db, clock)
    with transaction(db) as session:
        first = verify(session, plaintext, "events:write", clock.now()).last_used_at
    clock.advance(seconds=20)
    with transaction(db) as session:
        assert verify(session, plaintext, "events:write", clock.now()).last_used_at == first
    clock.advance(timedelta(minutes=1))
    with transaction(db) as session:
        assert verify(session, plaintext, "events:write", clock.now()).last_used_at == clock.now()


# --- the migration ------------------------------------------------------------------------


def assert_matches_models(url: str) -> None:
    assert "api_keys" in metadata.tables  # this module imported engine.api_keys
    diff = migrations.check(url)
    assert diff == [], "migrations and models disagree; add a revision:\n" + pformat(diff)


def test_sqlite_migration_builds_the_api_keys_table(tmp_path: Path) -> None:
    # Given an empty database migrated to head
    url = f"sqlite:///{tmp_path}/migrated.db"
    migrations.upgrade(url)
    # Then autogenerate finds nothing to add, api_keys included, and the key functions work on it
    assert_matches_models(url)
    db = make_engine(url)
    try:
        clock = VirtualClock()
        _row, plaintext = new_key(db, clock)
        with Session(db) as session:
            assert verify(session, plaintext, "events:write", clock.now()).name == "ingest"
    finally:
        db.dispose()
    # And the revision goes down and up again
    migrations.downgrade(url, "0002")
    migrations.upgrade(url)
    assert_matches_models(url)


@pytest.mark.postgres
def test_postgres_migration_builds_the_api_keys_table(postgres_url: str) -> None:
    reset_postgres(postgres_url, create_tables=False)
    migrations.upgrade(postgres_url)
    assert_matches_models(postgres_url)


# --- the command line ---------------------------------------------------------------------


def test_keys_create_list_and_revoke_from_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import _register_subcommands, app

    _register_subcommands()
    url = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["--database-url", url, *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    run("db", "upgrade")
    # Given a key created for the website
    plaintext = run(
        "keys", "create", "website", "--scope", "events:write", "--scope", "contacts:read"
    ).strip()
    prefix = plaintext.split("_")[1]
    assert plaintext.startswith(f"jl_{prefix}_")
    # Then the list shows it by prefix, never its secret
    listing = run("keys", "list")
    assert prefix in listing and "website" in listing and "events:write" in listing
    assert plaintext.split("_", 2)[2] not in listing
    # When it is revoked (pasting the whole key works too), it no longer verifies
    assert "revoked" in run("keys", "revoke", plaintext)
    db = make_engine(url)
    try:
        with Session(db) as session, pytest.raises(InvalidApiKey, match="revoked"):
            verify(session, plaintext, "events:write", VirtualClock().now())
    finally:
        db.dispose()
    # And bad input is refused with a message, exit code 2
    unknown_scope = runner.invoke(
        app, ["--database-url", url, "keys", "create", "x", "--scope", "admin"]
    )
    assert unknown_scope.exit_code == 2 and "unknown scope" in unknown_scope.output
    unknown_key = runner.invoke(app, ["--database-url", url, "keys", "revoke", "zzzzzzzz"])
    assert unknown_key.exit_code == 2 and "zzzzzzzz" in unknown_key.output
