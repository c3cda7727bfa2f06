"""The batch claim settles a dead worker's sends from SendGrid's events already recorded,
as the single claim does (review of ``mark_unknown`` on both paths)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlmodel import Session

from connectors.email import EmailConnector, EmailMessage, SendResult
from engine.inbound import record_sendgrid_events
from engine.models import Action, ActionStatus
from tests.language_support import running
from tests.support import actions
from tests.test_probe_providers_sendgrid_events import WELCOME, sg, welcomed


class _Blind(EmailConnector):
    """Batches, cannot dedupe (SendGrid's mail send); counts what it is asked to send."""

    name = "blind"
    dedupes = False
    batch_size = 100

    def __init__(self) -> None:
        self.recipients = 0

    def send(self, message: EmailMessage) -> SendResult:
        self.recipients += 1
        return SendResult("x")

    def send_batch(self, message: EmailMessage, recipients: Sequence[object]) -> SendResult:
        self.recipients += len(recipients)
        return SendResult("x")


def test_a_batch_claim_settles_dead_sends_from_events_already_recorded(tmp_path: Path) -> None:
    with running(tmp_path, [WELCOME]) as (rt, clock, _email):
        sent = welcomed(rt, "ana@example.com", "bo@example.com", "cy@example.com")
        rt.email = blind = _Blind()
        # Given a worker died mid-send of three welcomes, its lease over, after SendGrid
        # took Ana's and dropped Bo's; of Cy's nothing came
        with Session(rt.db) as session:
            for action_id in sent.values():
                action = session.get(Action, action_id)
                assert action is not None
                action.status, action.lease_until = ActionStatus.SENDING, clock.now()
                session.add(action)
            session.commit()
        record_sendgrid_events(rt, [sg("delivered", "ana@example.com", sent["ana@example.com"], 1)])
        dropped = sg("dropped", "bo@example.com", sent["bo@example.com"], 1, reason="Spam Content")
        record_sendgrid_events(rt, [dropped])
        clock.advance(minutes=1)
        # When a batch claims them again
        outcome = rt.perform_batch(sorted(sent.values()))
        # Then Ana's is sent, Bo's failed, Cy's unknown, each counted so, none sent again
        assert dict(outcome.statuses) == {"sent": 1, "failed": 1, "unknown": 1}
        assert blind.recipients == 0
        status = {a.id: a.status for a in actions(rt)}
        assert status[sent["ana@example.com"]] == ActionStatus.SENT
        assert status[sent["bo@example.com"]] == ActionStatus.FAILED
        assert status[sent["cy@example.com"]] == ActionStatus.UNKNOWN
