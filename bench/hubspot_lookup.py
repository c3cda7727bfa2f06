"""How a HubSpot webhook event finds its contact: by the indexed ``contacts.hubspot_id``.

``python -m bench.hubspot_lookup --database-url URL [--contacts 200000] [--smoke]`` seeds
contacts linked to HubSpot objects in a database of its own making (tables dropped and
created: give it a scratch database), then times the engine's lookup
(``engine.inbound_crm._by_hubspot_id``) against the baseline of reading the link out of
every contact's JSON ``external_ids``, as it was done before migration 0010. HubSpot gives a
webhook 5 s and sends up to 100 events in one.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlmodel import Session, SQLModel, col, select

from bench.common import Result, add_smoke_flag, print_results, run_cli, write_json
from bench.services import contact_row
from engine.db import make_engine
from engine.inbound_crm import _by_hubspot_id
from engine.models import Contact


def seed(url: str, contacts: int) -> None:
    db = make_engine(url)
    try:
        SQLModel.metadata.drop_all(db)
        SQLModel.metadata.create_all(db)
        now = datetime.now(UTC)
        with db.begin() as conn:
            for first in range(0, contacts, 10_000):
                rows = [
                    {
                        **contact_row(f"c{n}@bench.example", now=now),
                        "external_ids": {"hubspot": str(n)},
                        "hubspot_id": str(n),
                    }
                    for n in range(first, min(first + 10_000, contacts))
                ]
                conn.execute(insert(Contact.__table__), rows)  # type: ignore[attr-defined]
    finally:
        db.dispose()


def per_lookup_ms(url: str, contacts: int, lookups: int, *, indexed: bool) -> float:
    db = make_engine(url)
    try:
        with Session(db) as session:
            started = time.perf_counter()
            for i in range(lookups):
                object_id = str((i * 7919) % contacts)
                if indexed:
                    found = _by_hubspot_id(session, object_id)
                else:
                    found = session.exec(
                        select(Contact).where(
                            col(Contact.external_ids)["hubspot"].as_string() == object_id
                        )
                    ).first()
                assert found is not None and found.hubspot_id == object_id
            return (time.perf_counter() - started) / lookups * 1000
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.hubspot_lookup", description=__doc__)
    parser.add_argument("--database-url", required=True, help="a scratch database")
    parser.add_argument("--contacts", type=int, default=200_000)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    contacts = 500 if args.smoke else args.contacts
    seed(args.database_url, contacts)
    indexed = per_lookup_ms(args.database_url, contacts, 200, indexed=True)
    scanned = per_lookup_ms(args.database_url, contacts, 20, indexed=False)
    rows = [
        Result.of(
            f"ms per HubSpot event's contact lookup, {contacts:,} contacts "
            "(baseline: JSON external_ids scan)",
            indexed,
            "ms",
            scanned,
        ),
        Result.of(
            "ms of lookups for a batch of 100 events (baseline: JSON scan)",
            indexed * 100,
            "ms",
            scanned * 100,
        ),
    ]
    print_results(f"bench.hubspot_lookup ({contacts:,} contacts)", rows)
    print(f"wrote {write_json('hubspot_lookup', rows, contacts=contacts, smoke=args.smoke)}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.hubspot_lookup")
