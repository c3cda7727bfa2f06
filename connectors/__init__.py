"""Connectors: narrow interfaces to the outside world, one package per kind of side effect."""

from connectors.crm import CRMConnector, CRMRecord, LifecycleUpdate, PropertyValue
from connectors.email import (
    EmailConnector,
    EmailMessage,
    OutboxEmailConnector,
    RecordingEmailConnector,
    SendGridEmailConnector,
    SendResult,
    build_email_connector,
)

__all__ = [
    "CRMConnector",
    "CRMRecord",
    "EmailConnector",
    "EmailMessage",
    "LifecycleUpdate",
    "OutboxEmailConnector",
    "PropertyValue",
    "RecordingEmailConnector",
    "SendGridEmailConnector",
    "SendResult",
    "build_email_connector",
]
