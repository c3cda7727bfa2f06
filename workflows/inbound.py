"""Generic inbound webhooks: which JSON payloads from other systems become which events.

Each source is served at ``POST /v1/webhooks/<name>`` once its shared secret is set in
``JOURNEYLINE_INBOUND_WEBHOOK_SECRETS`` (a source without a secret answers 503). Requests
must carry ``X-Journeyline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``.
Neither Pipedrive nor Salesforce can sign that way on their own: see README.md, "Webhooks",
for the small relay each needs, and for what it must add to the payload.
"""

from engine import PRESENT, MapEvent, WebhookSource

# Pipedrive webhooks v2, `change.deal`: a deal moved to another stage. Pipedrive names the
# deal's person only by `person_id`; the relay that signs the request looks the person up
# and adds `person_email` to `data`.
PIPEDRIVE = WebhookSource(
    "pipedrive",
    description="Pipedrive webhooks v2 (change.deal), signed by a relay",
    maps=[
        MapEvent(
            "deal.stage_changed",
            when={"meta.entity": "deal", "meta.action": "change", "previous.stage_id": PRESENT},
            email="data.person_email",
            properties={
                "deal_id": "data.id",
                "stage_id": "data.stage_id",
                "previous_stage_id": "previous.stage_id",
                "pipeline_id": "data.pipeline_id",
                "status": "data.status",
                "value": "data.value",
                "currency": "data.currency",
            },
            key=("meta.id", "meta.entity_id", "meta.timestamp"),
            occurred_at="meta.timestamp",
        ),
    ],
)

# A Salesforce outbound message on Opportunity (fields Id, StageName and a contact email
# formula field), as JSON: the relay in front of us acknowledges Salesforce's SOAP
# `notifications`, re-posts each batch in this shape, and signs it.
SALESFORCE = WebhookSource(
    "salesforce",
    description="Salesforce outbound messages (Opportunity), converted to JSON by a relay",
    maps=[
        MapEvent(
            "opportunity.stage_changed",
            each="notifications",
            email="sObject.Contact_Email__c",
            properties={
                "opportunity_id": "sObject.Id",
                "stage": "sObject.StageName",
            },
            key="id",
        ),
    ],
)

SOURCES = [PIPEDRIVE, SALESFORCE]
