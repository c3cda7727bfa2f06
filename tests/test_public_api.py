"""The public API of each package is what its ``__init__`` exports; this pins it."""

from __future__ import annotations

import connectors
import engine
import workflows

ENGINE_API = {
    # time
    "Clock", "SystemClock", "VirtualClock",
    # errors
    "ConfigurationError", "ConnectorError", "DeliveryUnknownError", "InvalidTransition",
    "JourneylineError", "PermanentConnectorError", "TransientConnectorError", "ValidationError",
    "WorkflowDefinitionError", "WorkflowImportError",
    # stages
    "Guard", "Journey", "Move", "Stage", "StageMachine", "Transition", "lifecycle_journey",
    "score_at_least",
    # rules, workflows, triggers, guard rails
    "EventRule", "Guardrails", "RuleSet", "Segment", "Workflow", "at_most", "on_condition",
    "on_event", "on_schedule", "on_segment_joined", "on_stage_entered", "on_stage_left",
    "quiet_hours", "reenter_after", "reenter_always", "reenter_never", "send_window",
    # steps
    "add_tag", "branch", "call_webhook", "change_score", "create_crm_note", "create_crm_task",
    "exit_workflow", "move_stage", "remove_tag", "send_email", "set_attribute", "split",
    "update_crm", "wait", "wait_for_event", "wait_until", "wait_until_date",
    # conditions and predicates
    "all_of", "any_of", "attribute", "clicked", "did_event", "eq", "exists", "gt", "gte",
    "has_tag", "lt", "lte", "not_", "one_of", "opened", "score", "stage_in", "subscribed",
    # loading and configuration
    "Registry", "Settings", "build_registry", "load_registry",
    # generic inbound webhook sources
    "MapEvent", "PRESENT", "WebhookSource",
}  # fmt: skip


def test_engine_exports() -> None:
    assert set(engine.__all__) == ENGINE_API
    assert len(engine.__all__) == len(ENGINE_API)
    for name in engine.__all__:
        assert getattr(engine, name) is not None
    from engine.runtime import Runtime

    assert engine.Runtime is Runtime


def test_connectors_exports() -> None:
    assert sorted(connectors.__all__) == sorted(
        [
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
    )


def test_the_default_playbook_loads_and_validates() -> None:
    registry = engine.load_registry("workflows")
    assert set(registry.workflows) == {w.name for w in workflows.WORKFLOWS}
    assert registry.journey is workflows.JOURNEY


def test_every_error_is_a_journeyline_error() -> None:
    for name in (
        "ConfigurationError",
        "ConnectorError",
        "InvalidTransition",
        "PermanentConnectorError",
        "TransientConnectorError",
        "ValidationError",
        "WorkflowDefinitionError",
        "WorkflowImportError",
    ):
        assert issubclass(getattr(engine, name), engine.JourneylineError)
    assert issubclass(engine.TransientConnectorError, engine.ConnectorError)
