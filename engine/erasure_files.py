"""An erased contact's files in the embedded outboxes.

The outboxes (``.eml`` files for email, ``.json`` files for CRM steps) hold her address and
what the templates printed of her. ``outbox_files`` names hers, read before the erasure
(her actions go with her), and ``remove_files`` removes them once it is committed. Only the
files of the outboxes this process writes to: workers on other machines keep their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import event
from sqlmodel import Session, select

from connectors.email.outbox import OutboxEmailConnector
from engine.models import Action, Contact
from engine.performers import CRMOutboxPerformer

log = logging.getLogger(__name__)


class Outboxes(NamedTuple):
    email: OutboxEmailConnector | None
    crm: CRMOutboxPerformer | None


def outboxes_of(runtime: Any) -> Outboxes:
    """The outboxes a runtime writes to (each None when it sends elsewhere)."""
    email = runtime.email if isinstance(runtime.email, OutboxEmailConnector) else None
    crm = [p for p in runtime.extra_performers.values() if isinstance(p, CRMOutboxPerformer)]
    return Outboxes(email, crm[0] if crm else None)


def outbox_files(session: Session, contact: Contact, outboxes: Outboxes) -> list[Path]:
    """The files the outboxes wrote or would write for ``contact``'s actions, named as the
    outboxes name them."""
    if outboxes.email is None and outboxes.crm is None:
        return []
    found = session.exec(
        select(Action.kind, Action.idempotency_key).where(Action.contact_id == contact.id)
    )
    files: list[Path] = []
    for kind, key in found:
        if kind == "email" and outboxes.email is not None:
            files.append(outboxes.email.path_of(contact.email, key))
        elif kind.startswith("crm.") and outboxes.crm is not None:
            files.append(outboxes.crm.path_for(kind, key, contact.email))
    return files


def remove_after_commit(session: Session, files: list[Path]) -> None:
    """Remove ``files`` when ``session``'s transaction commits (not if it rolls back: then
    she was not erased)."""
    if files:
        event.listen(session, "after_commit", lambda _session: remove_files(files), once=True)


def remove_files(files: Iterable[Path]) -> int:
    """Remove ``files`` (those already gone are passed over); how many were removed. A file
    that cannot be removed is logged, counted, never named: its name holds the address."""
    removed = failed = 0
    for path in files:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed += 1
            log.error("an erased contact's outbox file was not removed: %s", exc.strerror)
            continue
        removed += 1
    if failed:
        log.error("%d outbox file(s) of an erased contact remain: remove them by hand", failed)
    return removed
