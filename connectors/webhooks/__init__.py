"""Inbound webhooks: signature verification and dedupe keys, as pure functions.

The HTTP service that receives webhooks calls these; nothing here knows about a framework.
"""

from connectors.webhooks.dedupe import hubspot_event_key, sendgrid_event_key
from connectors.webhooks.outgoing import WebhookSender
from connectors.webhooks.signatures import (
    HUBSPOT_SIGNATURE_HEADER,
    HUBSPOT_SIGNATURE_V3_HEADER,
    HUBSPOT_SIGNATURE_VERSION_HEADER,
    HUBSPOT_TIMESTAMP_HEADER,
    JOURNEYLINE_SIGNATURE_HEADER,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    SignatureError,
    SignatureFailure,
    generate_sendgrid_key_pair,
    sign_hmac,
    sign_hubspot_v3,
    sign_sendgrid,
    verify_hmac,
    verify_hubspot,
    verify_sendgrid,
)

__all__ = [
    "HUBSPOT_SIGNATURE_HEADER",
    "HUBSPOT_SIGNATURE_V3_HEADER",
    "HUBSPOT_SIGNATURE_VERSION_HEADER",
    "HUBSPOT_TIMESTAMP_HEADER",
    "JOURNEYLINE_SIGNATURE_HEADER",
    "SENDGRID_SIGNATURE_HEADER",
    "SENDGRID_TIMESTAMP_HEADER",
    "SignatureError",
    "SignatureFailure",
    "WebhookSender",
    "generate_sendgrid_key_pair",
    "hubspot_event_key",
    "sendgrid_event_key",
    "sign_hmac",
    "sign_hubspot_v3",
    "sign_sendgrid",
    "verify_hmac",
    "verify_hubspot",
    "verify_sendgrid",
]
