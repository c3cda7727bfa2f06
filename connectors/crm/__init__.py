"""CRM connectors: mirror contacts, lifecycle stages, tasks and notes into a CRM."""

from connectors.crm.base import CRMConnector, CRMRecord, LifecycleUpdate, PropertyValue
from connectors.crm.batch import CRMBatchResult
from connectors.crm.hubspot import (
    DEFAULT_LIFECYCLE_MAP,
    HUBSPOT_LIFECYCLE_ORDER,
    HubSpotConnector,
)
from connectors.crm.rate_limit import HubSpotRateLimiter, RollingWindow

__all__ = [
    "DEFAULT_LIFECYCLE_MAP",
    "HUBSPOT_LIFECYCLE_ORDER",
    "CRMBatchResult",
    "CRMConnector",
    "CRMRecord",
    "HubSpotConnector",
    "HubSpotRateLimiter",
    "LifecycleUpdate",
    "PropertyValue",
    "RollingWindow",
]
