"""Performers of the actions other than email (CRM, outgoing webhooks), chosen by settings.

The connectors they hold are returned too: the runtime closes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.crm import CRMConnector, HubSpotConnector, HubSpotRateLimiter
from connectors.webhooks.outgoing import WebhookSender
from engine.connector_plugins import is_plugin, plugin_crm_connector
from engine.errors import ConfigurationError
from engine.performers import (
    CRMOutboxPerformer,
    CRMPerformer,
    Performer,
    Unconfigured,
    WebhookPerformer,
)
from engine.registry import Registry
from engine.settings import Settings


@dataclass(frozen=True)
class PerformerSetup:
    """Performers by action kind, and the connectors built for them."""

    performers: dict[str, Performer]
    crm: CRMConnector | None = None
    webhooks: WebhookSender | None = None


def configured_performers(settings: Settings, registry: Registry) -> PerformerSetup:
    """The CRM and webhook performers the settings choose; ``ConfigurationError`` when they
    are incomplete or unknown."""
    found: dict[str, Performer] = {}
    crm_connector: CRMConnector | None = None
    webhooks: WebhookSender | None = None
    if settings.crm_connector == "outbox":
        crm: Performer = CRMOutboxPerformer(settings.crm_outbox_dir or settings.outbox_dir / "crm")
    elif settings.crm_connector == "hubspot":
        if not settings.hubspot_token:
            raise ConfigurationError(
                "JOURNEYLINE_CRM_CONNECTOR=hubspot needs JOURNEYLINE_HUBSPOT_TOKEN"
            )
        stages = registry.journey.stage_names
        unknown = [s for s in settings.hubspot_lifecycle_map if s not in stages]
        if unknown:  # the override would silently never apply
            raise ConfigurationError(
                f"JOURNEYLINE_HUBSPOT_LIFECYCLE_MAP: {', '.join(map(repr, unknown))} "
                f"{'is not a stage' if len(unknown) == 1 else 'are not stages'} of the "
                f"journey; its stages: {', '.join(stages)}"
            )
        crm_connector = HubSpotConnector(
            token=settings.hubspot_token,
            base_url=settings.hubspot_base_url,
            timeout_s=settings.hubspot_timeout_seconds,
            lifecycle_map=settings.hubspot_lifecycle_map or None,
            limiter=HubSpotRateLimiter(max_per_interval=settings.hubspot_max_per_interval),
            max_retries=settings.hubspot_max_retries,
        )
        mirrored = {
            "score": settings.hubspot_score_property,
            "workflow": settings.hubspot_workflow_property,
        }
        for kind in ("crm.update", "crm.task", "crm.note"):
            found[kind] = CRMPerformer(
                crm_connector,
                kind,
                mirrored=mirrored,
                allow_backward=settings.hubspot_allow_backward,
            )
        crm = found["crm.update"]
    elif is_plugin(settings.crm_connector):  # module:factory, a CRM of the user's own
        crm_connector = plugin_crm_connector(settings)
        for kind in ("crm.update", "crm.task", "crm.note"):
            found[kind] = CRMPerformer(crm_connector, kind)
        crm = found["crm.update"]
    elif settings.crm_connector == "none":
        crm = Unconfigured("CRM", "JOURNEYLINE_CRM_CONNECTOR")
    else:
        raise ConfigurationError(
            f"unknown CRM connector {settings.crm_connector!r}; "
            "choose one of: outbox, hubspot, none, or module:factory for one of your own"
        )
    found.setdefault("crm.update", crm)
    found.setdefault("crm.task", crm)
    found.setdefault("crm.note", crm)
    if settings.webhook_secret:
        webhooks = WebhookSender(
            secret=settings.webhook_secret, timeout_s=settings.webhook_timeout_seconds
        )
        found["webhook"] = WebhookPerformer(webhooks)
    else:
        found["webhook"] = Unconfigured("webhook", "JOURNEYLINE_WEBHOOK_SECRET")
    return PerformerSetup(performers=found, crm=crm_connector, webhooks=webhooks)
