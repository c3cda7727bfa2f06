"""Errors raised by Journeyline.

Every error the engine raises on purpose derives from ``JourneylineError``::

    JourneylineError
    ├── ValidationError            bad input: an email, a time zone, a stage, an event
    ├── InvalidTransition          a trigger that is not allowed from the contact's stage
    ├── WorkflowDefinitionError    a workflow (or rule set) that fails validation at load
    │   └── WorkflowImportError       the workflows module was not found, or importing it raised
    ├── ConfigurationError         settings that cannot work together (WorkflowImportError too)
    └── ConnectorError             a side effect that failed at its provider
        ├── TransientConnectorError   worth retrying (429, 5xx, network); may carry retry_after
        ├── PermanentConnectorError   retrying will not help (4xx, rejected payload)
        └── DeliveryUnknownError      may or may not have happened (a timeout): never resend

Connectors translate their client library's exceptions into ``ConnectorError`` at the
boundary (``raise ... from exc``), so workflow code never sees ``httpx`` or ``sendgrid``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta


class JourneylineError(Exception):
    """Base class of every error Journeyline raises on purpose."""


class ValidationError(JourneylineError, ValueError):
    """Input was rejected; ``field`` names what was wrong."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidTransition(JourneylineError):
    """A trigger was fired that the contact's current stage does not allow."""

    def __init__(self, *, contact: str, stage: str, trigger: str, reason: str) -> None:
        super().__init__(
            f"contact {contact!r} in stage {stage!r} cannot take trigger {trigger!r}: {reason}"
        )
        self.contact = contact
        self.stage = stage
        self.trigger = trigger
        self.reason = reason


class WorkflowDefinitionError(JourneylineError):
    """One or more problems in a workflow or rule definition, all reported at once."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in workflow definitions:\n{listing}")


class ConfigurationError(JourneylineError):
    """Settings that cannot work (an unknown broker scheme, a missing API key...)."""


class WorkflowImportError(WorkflowDefinitionError, ConfigurationError):
    """The workflows module could not be imported: it was not found, or running it raised.

    One problem, which is also the whole message. It is a ``ConfigurationError`` too, so
    that every command turns it into one line without a traceback."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])

    def __str__(self) -> str:
        return self.problems[0]


class ConnectorError(JourneylineError):
    """A connector could not perform a side effect."""


class TransientConnectorError(ConnectorError):
    """A failure worth retrying; ``retry_after`` is the provider's hint, if it gave one."""

    def __init__(self, message: str, *, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentConnectorError(ConnectorError):
    """A failure that retrying will not fix; recorded on the action and shown to operators."""


class DeliveryUnknownError(ConnectorError):
    """The provider may or may not have performed the side effect (e.g. a timeout after the
    request was sent). The action is marked ``unknown`` and is reconciled from delivery
    events, never re-sent blindly."""


def unexpected_failure(exc: Exception, *, dedupes: bool) -> Exception:
    """What a connector's unexpected exception (not a ``ConnectorError``: a bug, a reply it
    could not read) counts as. It may come after the provider acted, so only a call that is
    harmless to repeat (``dedupes``) is retried, like a transient error; any other (an
    email, a CRM task or note) is ``unknown``, as after a timeout: never performed twice."""
    if dedupes:
        return exc
    return DeliveryUnknownError(
        f"the connector raised {type(exc).__name__}: {exc} (it may have acted first; not repeated)"
    )
