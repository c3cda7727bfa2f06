"""Fakes shipped with Journeyline, so users can test their workflows against real HTTP."""

from connectors.fakes.hubspot import (
    FakeHubSpot,
    HubSpotEngagement,
    HubSpotRequest,
)
from connectors.fakes.hubspot import send_webhook as send_hubspot_webhook
from connectors.fakes.hubspot import webhook_event as hubspot_webhook_event
from connectors.fakes.sendgrid import FakeSendGrid, RecordedRequest, SentMessage

__all__ = [
    "FakeHubSpot",
    "FakeSendGrid",
    "HubSpotEngagement",
    "HubSpotRequest",
    "RecordedRequest",
    "SentMessage",
    "hubspot_webhook_event",
    "send_hubspot_webhook",
]
