"""Loading and validating the user's journey, rules, workflows and guard rails.

The workflows module (``workflows`` by default) may define:

- ``JOURNEY``: a ``Journey`` (default: ``lifecycle_journey()``)
- ``RULES``: a list of ``EventRule``
- ``WORKFLOWS``: a list of ``Workflow``
- ``EVENTS``: extra event types workflows may wait for (beyond those rules name)
- ``GUARDRAILS``: a ``Guardrails`` (frequency cap, quiet hours) over all marketing email
- ``LATE_EVENTS_AFTER``: a ``timedelta`` (default 72 hours), or None: an event that arrives
  longer than that after it occurred (a backfill, a device offline for days) is kept as
  history, not applied live (``EventStatus.LATE``)

``build_registry`` checks all of it together and raises one ``WorkflowDefinitionError``
listing every problem found (the checks are in ``engine.workflow_checks``), each with the
file and line of the workflow.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from types import ModuleType

from engine.conditions import Condition
from engine.errors import WorkflowDefinitionError, WorkflowImportError
from engine.machine import StageMachine
from engine.rules import EventRule, RuleSet
from engine.stages import Journey, lifecycle_journey
from engine.steps import WaitUntilDate
from engine.templates import TemplateRenderer
from engine.workflow import (
    ConditionMet,
    EventReceived,
    Guardrails,
    Scheduled,
    StageEntered,
    StageLeft,
    Workflow,
)
from engine.workflow_checks import (
    guardrails_problems,
    where_defined,
    workflow_problems,
    workflow_set_problems,
)

log = logging.getLogger(__name__)

# Events the engine itself records (delivery and engagement feedback, lifecycle).
BUILTIN_EVENTS = frozenset({
    "contact.created", "contact.updated", "crm.lifecycle_changed", "crm.contact_changed",
    "email.processed", "email.delivered", "email.deferred", "email.opened", "email.clicked",
    "email.bounced", "email.dropped", "email.spam_reported", "email.unsubscribed",
    "email.group_unsubscribed", "email.group_resubscribed", "email.resubscribed",
})  # fmt: skip


LATE_EVENTS_AFTER = timedelta(hours=72)
"""How long after it occurred an event may arrive and still be applied live (as Customer.io
triggers no campaign from an event more than 72 hours old): a later one is history."""


@dataclass
class Registry:
    journey: Journey
    machine: StageMachine
    rules: RuleSet
    workflows: dict[str, Workflow]
    templates: TemplateRenderer
    guardrails: Guardrails = field(default_factory=Guardrails)
    events: frozenset[str] = frozenset()
    late_after: timedelta | None = LATE_EVENTS_AFTER
    # The importable module it was loaded from (None when built from a list): the API
    # looks for that module's ``inbound`` webhook sources, not the settings' module's.
    module: str | None = None

    @cached_property
    def date_attributes(self) -> frozenset[str]:
        """The attributes a ``wait_until_date`` step counts from: a value given for one of
        them must be a date (``engine.date_attributes``)."""
        return frozenset(
            node.step.attribute
            for workflow in self.workflows.values()
            for node in workflow.program
            if isinstance(node.step, WaitUntilDate)
        )

    @cached_property
    def condition_items(self) -> tuple[tuple[tuple[str, str, int], Condition], ...]:
        """Every condition-based trigger, goal and exit of the workflows, as ((workflow,
        role, index), condition): worked out once, as a registry's workflows do not change
        after it is built (every event evaluates them all, twice)."""
        found = []
        for workflow in self.workflows.values():
            for role, items in (
                ("trigger", (workflow.trigger,)),
                ("goal", workflow.goals),
                ("exit", workflow.exit_when),
            ):
                for index, item in enumerate(items):
                    if isinstance(item, ConditionMet):
                        found.append(((workflow.name, role, index), item.condition))
        return tuple(found)

    def triggered_by_stage(self, stage: str) -> list[Workflow]:
        return [
            w
            for w in self.workflows.values()
            if isinstance(w.trigger, StageEntered) and w.trigger.stage == stage
        ]

    def triggered_by_stage_left(self, stage: str) -> list[Workflow]:
        return [
            w
            for w in self.workflows.values()
            if isinstance(w.trigger, StageLeft) and w.trigger.stage == stage
        ]

    def triggered_by_event(self, event_type: str) -> list[Workflow]:
        return [
            w
            for w in self.workflows.values()
            if isinstance(w.trigger, EventReceived) and w.trigger.type == event_type
        ]

    def triggered_by_condition(self) -> list[Workflow]:
        return [w for w in self.workflows.values() if isinstance(w.trigger, ConditionMet)]

    def triggered_by_schedule(self) -> list[Workflow]:
        return [w for w in self.workflows.values() if isinstance(w.trigger, Scheduled)]

    def knows_event(self, event_type: str) -> bool:
        return self.rules.knows(event_type) or event_type in self.events


def build_registry(
    *,
    journey: Journey | None = None,
    rules: Iterable[EventRule] = (),
    workflows: Iterable[Workflow] = (),
    templates_dir: Path,
    events: Iterable[str] = (),
    guardrails: Guardrails | None = None,
    late_after: object = LATE_EVENTS_AFTER,
) -> Registry:
    journey = journey or lifecycle_journey()
    problems = journey.problems()
    if late_after is not None and (
        not isinstance(late_after, timedelta) or late_after <= timedelta(0)
    ):
        problems.append(
            f"LATE_EVENTS_AFTER is {late_after!r}: give a positive timedelta (e.g. "
            "timedelta(hours=72)), or None to apply every event live however late it arrives"
        )
    rule_set = RuleSet(rules)
    problems += rule_set.problems(journey.triggers)
    renderer = TemplateRenderer(templates_dir)
    known_events = frozenset(events) | BUILTIN_EVENTS | rule_set.event_types
    guardrails = guardrails or Guardrails()
    problems += guardrails_problems(guardrails)
    by_name: dict[str, Workflow] = {}
    for wf in workflows:
        if not isinstance(wf, Workflow):
            problems.append(f"WORKFLOWS holds {wf!r}, which is not a Workflow(...)")
            continue
        first = by_name.get(wf.name)
        if first is wf:
            problems.append(
                f"{where_defined(wf)}: workflow {wf.name!r} is listed twice in WORKFLOWS"
            )
        elif first is not None:
            problems.append(
                f"{where_defined(wf)}: workflow name {wf.name!r} is used twice (first at "
                f"{where_defined(first)}): give each workflow a name of its own"
            )
        by_name[wf.name] = wf
        problems += workflow_problems(wf, journey, renderer, known_events)
    problems += workflow_set_problems(by_name.values(), journey)  # between workflows
    problems = _one_missing_folder(problems, renderer)
    if problems:
        raise WorkflowDefinitionError(problems)
    return Registry(
        journey,
        StageMachine(journey),
        rule_set,
        by_name,
        renderer,
        guardrails,
        known_events,
        late_after,  # type: ignore[arg-type]  # checked above
    )


def _one_missing_folder(problems: list[str], renderer: TemplateRenderer) -> list[str]:
    """A missing templates folder said once, not once for every email step."""
    if renderer.directory.is_dir():
        return problems
    lost = re.compile(rf"template '([^']+)' not found in {re.escape(str(renderer.directory))} ")
    names = sorted({m[1] for p in problems if (m := lost.search(p))})
    if not names:
        return problems
    shown = ", ".join(f"{n}.j2" for n in names[:5]) + (", ..." if len(names) > 5 else "")
    return [p for p in problems if not lost.search(p)] + [
        f"the templates folder {renderer.directory} does not exist: {len(names)} email "
        f"templates should be there ({shown}); create it, or point JOURNEYLINE_TEMPLATES_DIR "
        "at yours"
    ]


# --- loading the workflows module ----------------------------------------------------------


def load_registry(module_name: str, *, templates_dir: Path | None = None) -> Registry:
    """Import the workflows module ``module_name`` and validate everything in it.

    The module is looked for in the current directory first, as ``python -m`` does, then on
    the Python path. Raises ``WorkflowImportError`` when it is not found or importing it
    raises (naming the file and line of the user's code), ``WorkflowDefinitionError`` when
    its definitions have problems."""
    return registry_from_module(import_workflows(module_name), templates_dir=templates_dir)


def registry_from_module(module: ModuleType, *, templates_dir: Path | None = None) -> Registry:
    if templates_dir is None:
        if module.__file__ is None:
            raise WorkflowDefinitionError([f"module {module.__name__!r} has no file location"])
        templates_dir = Path(module.__file__).parent / "templates"
    registry = build_registry(
        journey=getattr(module, "JOURNEY", None),
        rules=getattr(module, "RULES", ()),
        workflows=getattr(module, "WORKFLOWS", ()),
        templates_dir=templates_dir,
        events=getattr(module, "EVENTS", ()),
        guardrails=getattr(module, "GUARDRAILS", None),
        late_after=getattr(module, "LATE_EVENTS_AFTER", LATE_EVENTS_AFTER),
    )
    registry.module = module.__name__
    return registry


def import_workflows(module_name: str) -> ModuleType:
    """Import the user's workflows module, turning whatever goes wrong into one
    ``WorkflowImportError`` that says where and how to fix it."""
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        stem = Path(module_name.rstrip("/\\")).stem or "workflows"
        raise WorkflowImportError(
            f"JOURNEYLINE_WORKFLOWS={module_name!r} is not a module name: give the dotted name "
            f"of the Python module or package that defines WORKFLOWS (e.g. {stem!r}), and run "
            "from the folder that holds it or add that folder to PYTHONPATH"
        )
    added = _working_directory_first(module_name)
    try:
        module = importlib.import_module(module_name)
        if added is not None:
            log.info("workflows module %r loaded from %s", module_name, module.__file__)
        return module
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise WorkflowImportError(_not_found(module_name, exc.name)) from None
        raise WorkflowImportError(import_failure(module_name, exc)) from exc
    except Exception as exc:  # the user's code raised: name its file and line, not ours
        raise WorkflowImportError(import_failure(module_name, exc)) from exc
    finally:
        if added is not None and added in sys.path:
            # Only for this import (its package keeps its own path for submodules): left
            # first on the path, a file here could shadow any module imported later.
            sys.path.remove(added)


def _working_directory_first(module_name: str) -> str | None:
    """Put the current directory first on ``sys.path`` when it holds the module, as
    ``python -m`` does (an installed console script does not); return the entry added."""
    here = Path.cwd()
    top = module_name.partition(".")[0]
    if not ((here / top / "__init__.py").is_file() or (here / f"{top}.py").is_file()):
        return None
    if any(Path(os.path.abspath(entry or os.curdir)) == here for entry in sys.path):
        return None
    sys.path.insert(0, str(here))
    importlib.invalidate_caches()
    return str(here)


def _not_found(module_name: str, missing: str) -> str:
    path = module_name.replace(".", "/")
    top = module_name.partition(".")[0]
    python_path = os.environ.get("PYTHONPATH")
    on_path = f"on PYTHONPATH ({python_path}) and" if python_path else "on"
    inside = f" (there is no {missing!r})" if missing != module_name else ""
    return (
        f"workflows module {module_name!r} not found{inside}: looked for {path}/__init__.py "
        f"or {path}.py in the current directory ({Path.cwd()}) and {on_path} the Python path. "
        f"Run from the folder that holds {top}, add that folder to PYTHONPATH, or set "
        "JOURNEYLINE_WORKFLOWS to your workflows module's name"
    )


def import_failure(module_name: str, exc: BaseException) -> str:
    """``file:line: Error: message`` for an exception raised importing ``module_name``, at
    the deepest line of the user's own code (not the engine's, not the standard library's)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        at, code, message = f"{exc.filename}:{exc.lineno}", exc.text or "", exc.msg
    else:
        frame = _user_frame(exc)
        at = f"{frame.filename}:{frame.lineno}" if frame else f"module {module_name!r}"
        code, message = (frame.line or "") if frame else "", str(exc)
    message = " ".join(message.split())
    text = f"{at}: {type(exc).__name__}" + (f": {message}" if message else "")
    code = " ".join(code.split())
    if code:
        text += f" (in `{code[:80]}`)"
    return f"{text}, importing workflows module {module_name!r}"


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    ours = str(Path(__file__).resolve().parent)
    library = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    theirs = [
        f for f in frames if not os.path.abspath(f.filename).startswith((ours + os.sep, *library))
    ]
    return theirs[-1] if theirs else frames[-1] if frames else None
