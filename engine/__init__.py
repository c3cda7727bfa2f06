"""Journeyline: lead nurturing and customer lifecycle automation, defined in tested Python."""

from engine.clock import Clock, SystemClock, VirtualClock
from engine.conditions import (
    all_of,
    any_of,
    attribute,
    clicked,
    did_event,
    eq,
    exists,
    gt,
    gte,
    has_tag,
    lt,
    lte,
    not_,
    one_of,
    opened,
    score,
    stage_in,
    subscribed,
)
from engine.errors import (
    ConfigurationError,
    ConnectorError,
    DeliveryUnknownError,
    InvalidTransition,
    JourneylineError,
    PermanentConnectorError,
    TransientConnectorError,
    ValidationError,
    WorkflowDefinitionError,
    WorkflowImportError,
)
from engine.machine import Move, StageMachine
from engine.registry import Registry, build_registry, load_registry
from engine.rules import EventRule, RuleSet
from engine.settings import Settings
from engine.stages import (
    Guard,
    Journey,
    Stage,
    Transition,
    lifecycle_journey,
    score_at_least,
)
from engine.steps import (
    add_tag,
    branch,
    call_webhook,
    change_score,
    create_crm_note,
    create_crm_task,
    exit_workflow,
    move_stage,
    remove_tag,
    send_email,
    set_attribute,
    split,
    update_crm,
    wait,
    wait_for_event,
    wait_until,
    wait_until_date,
)
from engine.workflow import (
    Guardrails,
    Segment,
    Workflow,
    at_most,
    on_condition,
    on_event,
    on_schedule,
    on_segment_joined,
    on_stage_entered,
    on_stage_left,
    quiet_hours,
    reenter_after,
    reenter_always,
    reenter_never,
    send_window,
)

__all__ = [
    "PRESENT",
    "Clock",
    "ConfigurationError",
    "ConnectorError",
    "DeliveryUnknownError",
    "EventRule",
    "Guard",
    "Guardrails",
    "InvalidTransition",
    "Journey",
    "JourneylineError",
    "MapEvent",
    "Move",
    "PermanentConnectorError",
    "Registry",
    "RuleSet",
    "Segment",
    "Settings",
    "Stage",
    "StageMachine",
    "SystemClock",
    "TransientConnectorError",
    "Transition",
    "ValidationError",
    "VirtualClock",
    "WebhookSource",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowImportError",
    "add_tag",
    "all_of",
    "any_of",
    "at_most",
    "attribute",
    "branch",
    "build_registry",
    "call_webhook",
    "change_score",
    "clicked",
    "create_crm_note",
    "create_crm_task",
    "did_event",
    "eq",
    "exists",
    "exit_workflow",
    "gt",
    "gte",
    "has_tag",
    "lifecycle_journey",
    "load_registry",
    "lt",
    "lte",
    "move_stage",
    "not_",
    "on_condition",
    "on_event",
    "on_schedule",
    "on_segment_joined",
    "on_stage_entered",
    "on_stage_left",
    "one_of",
    "opened",
    "quiet_hours",
    "reenter_after",
    "reenter_always",
    "reenter_never",
    "remove_tag",
    "score",
    "score_at_least",
    "send_email",
    "send_window",
    "set_attribute",
    "split",
    "stage_in",
    "subscribed",
    "update_crm",
    "wait",
    "wait_for_event",
    "wait_until",
    "wait_until_date",
]


def __getattr__(name: str) -> object:
    # The runtime pulls in Dramatiq, SQLAlchemy engines and connectors; import it lazily so
    # that ``from engine import Workflow`` in a workflows module stays light and cycle-free.
    if name == "Runtime":
        from engine.runtime import Runtime

        return Runtime
    if name in ("MapEvent", "PRESENT", "WebhookSource"):
        # Generic webhook source declarations (workflows/inbound.py); their module records
        # events, so it is as heavy as the runtime.
        from engine import inbound_generic

        return getattr(inbound_generic, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
