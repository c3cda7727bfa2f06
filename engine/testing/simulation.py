"""``Simulation``: the real pipeline in virtual time, for testing workflows.

It runs the same stage machine, workflow executor and action path as production, on a
throw-away SQLite database, the in-process broker, a recording email connector and a
``VirtualClock``. ``advance`` jumps from one due wake-up to the next, so months of waits
cost milliseconds; expectations that fail print the contact's whole timeline.

    sim = Simulation()                      # the workflows module from settings
    sim.track("ana@example.com", "trial.started", timezone="Europe/Madrid",
              attributes={"trial_ends_at": "2026-03-20"})
    sim.advance(days=10)
    sim.expect_email("ana@example.com", "trial_reminder", times=1, at_local="09:00")
    sim.expect_stage("ana@example.com", "decision")

A new version of a workflow mid-test: ``sim.deploy(new_version)`` (or ``sim.use_workflows``
for a whole new set), then ``sim.migrate(name)`` moves in-flight enrollments as
``journeyline workflows migrate NAME --apply`` would, and returns the plan.
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from connectors.email import EmailMessage, RecordingEmailConnector
from engine.broadcast import BroadcastResult
from engine.clock import VirtualClock
from engine.contacts import normalize_email
from engine.db import make_engine, transaction
from engine.enrollments import remember_version
from engine.localtime import zone
from engine.models import Contact, Enrollment, EnrollmentStatus
from engine.recording import Recorded
from engine.refusals import Refusal, listening
from engine.registry import Registry, build_registry, load_registry, registry_from_module
from engine.runtime import Runtime
from engine.settings import Settings
from engine.steps import SendEmail
from engine.timeline import Entry, Timeline, contact_timeline
from engine.versions import MigrationPlan, apply_migration, plan_migration
from engine.virtual_time import advance_to
from engine.workflow import Workflow

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday

# Row ids in timeline summaries ("goal reached: demo.requested (event 3)") depend on what
# else the test did first; a golden journey keeps the kind of row, not its number.
_STEP_ID = re.compile(r"[A-Za-z0-9_\-]+")  # how a step id reads (a subject reads otherwise)
_ROW_ID = re.compile(r"\((event|action|contact|enrollment) #?\d+\)")


class JourneyAssertionError(AssertionError):
    """An expectation about a contact's journey failed; the message holds their timeline."""


@dataclass(frozen=True)
class SentEmail:
    to: str
    workflow: str
    step: str
    subject: str
    sent_at: datetime
    message: EmailMessage
    timezone: str = "UTC"  # the contact's time zone when it went out (see ``expect_email``)

    @property
    def template_step(self) -> str:
        return f"{self.workflow}:{self.step}"

    @property
    def sent_at_local(self) -> datetime:
        return self.sent_at.astimezone(zone(self.timezone))


class Simulation:
    def __init__(
        self,
        workflows: str | ModuleType | Registry = "workflows",
        *,
        start: datetime = DEFAULT_START,
        templates_dir: Path | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="journeyline-sim-"))
        registry = _load(workflows, templates_dir)
        # Each contact's time zones as the harness saw them change: (how many emails had
        # gone out by then, zone). The database keeps only the current zone.
        self._zones: dict[str, list[tuple[int, str]]] = {}
        # Every email step id and workflow any version in this simulation has had: a name
        # in an expectation that is none of them is a typo, not a journey that differs.
        self._steps: set[str] = set()
        self._workflows: set[str] = set()
        self._steps_of: dict[str, set[str]] = {}  # workflow -> its email step ids, any version
        self._know(registry)
        url = f"sqlite:///{self._folder / 'sim.db'}"
        db = make_engine(url)
        SQLModel.metadata.create_all(db)
        self.clock = VirtualClock(start)
        self.email = RecordingEmailConnector()
        options = {"outbox_dir": self._folder / "outbox", **(settings or {})}
        self.runtime = Runtime(
            Settings(database_url=url, broker_url="inline://", **options),
            clock=self.clock,
            registry=registry,
            email=self.email,
            db=db,
        )
        self.runtime.start()
        # Entries the pipeline refused (a re-entry policy, an entry rule, consent): they
        # write no row, so the harness hears them and prints them with the timeline.
        self._refused: dict[Refusal, None] = {}  # in the order heard, each once
        self._listening = ExitStack()
        self._listening.enter_context(listening(self._hear))

    # --- driving ------------------------------------------------------------------------

    def track(
        self,
        email: str,
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Recorded:
        """Record an event now (virtual time) and process everything it causes.

        An event type nothing knows (no rule, no workflow, not in ``EVENTS``) that reads
        like one that is known is refused as a typo: kept as "unmapped", it would do
        nothing, and an expectation of nothing would pass."""
        self._refuse_typo(event_type)
        mark = self._note_zone(email)
        recorded = self.runtime.track(email, event_type, properties, **options)
        self._note_zone(email, mark)
        self.runtime.run_until_idle()
        return recorded

    def _refuse_typo(self, event_type: str) -> None:
        registry = self.runtime.registry
        if registry.knows_event(event_type) or event_type in registry.events:
            return
        close = _close(event_type, registry.events, cutoff=TYPO_CUTOFF)
        if close:
            raise JourneyAssertionError(
                f"track(..., {event_type!r}): no rule, workflow or EVENTS entry knows this "
                f"event type, so it would do nothing{close} (list a type of your own in "
                "EVENTS of the workflows module to track it)"
            )

    def open_email(self, to: str, step: str) -> Recorded:
        """The contact opens the last email of ``step`` sent to them, as the SendGrid
        webhook reports it (an ``email.opened`` naming its action): what ``opened(step)``
        conditions and the reports read."""
        return self._engage(to, step, "email.opened")

    def click_email(self, to: str, step: str) -> Recorded:
        """The contact clicks a link in the last email of ``step`` sent to them (an
        ``email.clicked``; ``clicked(step)`` and ``opened(step)`` both count it)."""
        return self._engage(to, step, "email.clicked")

    def _engage(self, to: str, step: str, event_type: str) -> Recorded:
        sent = self.emails(to, step=step)
        if not sent:
            unknown = self._names_nothing(to, step)
            why = f" ({unknown})" if unknown else ""
            raise JourneyAssertionError(
                f"{normalize_email(to)} got no {step!r} email to act on{why}\n\n{self.explain(to)}"
            )
        action_id = sent[-1].message.custom_args.get("jl_action_id")
        return self.track(to, event_type, {"action_id": action_id})

    def contact_import(self, email: str, **options: Any) -> Contact:
        mark = self._note_zone(email)
        contact = self.runtime.upsert_contact(email, **options)
        self._note_zone(email, mark)
        self.runtime.run_until_idle()
        return contact

    def broadcast(self, workflow: str) -> BroadcastResult:
        """Start ``workflow`` now for every contact in its audience (``journeyline
        broadcast``) and process everything it causes."""
        result = self.runtime.broadcast(workflow)
        self.runtime.run_until_idle()
        return result

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move virtual time forward, stopping at every due wake-up and deferred send on the
        way, so each happens at its own instant. ``advance(days=1, hours=6)`` or
        ``advance(timedelta(...))``; time never goes back."""
        return advance_to(self.runtime, self.clock, self.clock.now() + _step(delta, kwargs))

    def now(self) -> datetime:
        return self.clock.now()

    # --- deploying new versions ---------------------------------------------------------

    def deploy(self, *workflows: Workflow) -> Registry:
        """Deploy new versions of ``workflows`` now, as a release would: each replaces the
        workflow of the same name (one with a new name is added), the others stay, and the
        set is validated as at load. In-flight enrollments stay on their versions until
        ``migrate``. Returns the new registry."""
        current = self.runtime.registry
        for workflow in workflows:
            if not isinstance(workflow, Workflow):
                raise TypeError(f"deploy takes Workflow(...) objects, not {workflow!r}")
        by_name = {**current.workflows, **{w.name: w for w in workflows}}
        return self.use_workflows(
            build_registry(
                journey=current.journey,
                rules=current.rules.rules,
                workflows=by_name.values(),
                templates_dir=current.templates.directory,
                events=current.events,
                guardrails=current.guardrails,
            )
        )

    def use_workflows(
        self, workflows: str | ModuleType | Registry, *, templates_dir: Path | None = None
    ) -> Registry:
        """Replace the whole set of workflows now (a module name, a module or a registry,
        as ``Simulation(...)`` takes), storing the new versions' specs as a worker does."""
        registry = _load(workflows, templates_dir)
        self._know(registry)
        with transaction(self.runtime.db) as session:
            for workflow in registry.workflows.values():
                remember_version(session, registry, workflow, self.clock.now())
        self.runtime.registry = registry
        return registry

    def migrate(self, workflow: str, *, apply: bool = True) -> MigrationPlan:
        """Move the live enrollments of older versions of ``workflow`` to the current one
        (``journeyline workflows migrate NAME --apply``; ``apply=False`` only plans) and
        return the plan: ``plan.landing`` where they land, ``plan.refused`` and
        ``plan.reasons`` those that stay, and why."""
        with transaction(self.runtime.db) as session:
            plan = plan_migration(session, self.runtime.registry, workflow)
            if apply:
                apply_migration(session, plan)
        if apply:
            self.runtime.run_until_idle()
        return plan

    # --- looking ------------------------------------------------------------------------

    def contact(self, email: str) -> Contact:
        address = normalize_email(email)
        with Session(self.runtime.db) as session:
            found = session.exec(select(Contact).where(Contact.email == address)).first()
        if found is None:
            raise JourneyAssertionError(f"no contact {address!r} in this simulation")
        return found

    def emails(
        self, to: str | None = None, *, workflow: str | None = None, step: str | None = None
    ) -> list[SentEmail]:
        found = []
        for index, message in enumerate(self.email.sent):
            wf, _, st = (
                message.categories[1].partition(":")
                if len(message.categories) > 1
                else ("manual", "", "")
            )
            if to is not None and message.to != normalize_email(to):
                continue
            if workflow is not None and wf != workflow:
                continue
            if step is not None and st != step and message.subject != step:
                continue
            found.append(
                SentEmail(
                    message.to,
                    wf,
                    st,
                    message.subject,
                    message.sent_at,
                    message,
                    self._zone_of(message.to, index),
                )
            )
        return found

    def timeline(self, email: str) -> Timeline | None:
        with Session(self.runtime.db) as session:
            return contact_timeline(session, email)

    def explain(self, email: str) -> str:
        """The contact's timeline as text, times in UTC and in their own zone."""
        timeline = self.timeline(email)
        if timeline is None:
            return f"(no contact {email!r})"
        tz = zone(timeline.contact.timezone)
        head = (
            f"{timeline.contact.email}: stage {timeline.contact.stage}, score "
            f"{timeline.contact.score}, {timeline.contact.subscription_status}, "
            f"time zone {timeline.contact.timezone}"
        )
        lines = [head]
        refused = [r for r in self._refused if r.contact_id == timeline.contact.id]
        for at, kind, summary in _with_refusals(timeline.entries, refused):
            local = at.astimezone(tz)
            lines.append(
                f"  {at:%Y-%m-%d %H:%M} UTC ({local:%a %H:%M} local)  {kind:<10} {summary}"
            )
        return "\n".join(lines)

    def _hear(self, db: Engine, refusal: Refusal) -> None:
        # "Already in it" is every trigger of a contact in the workflow: noise in a timeline,
        # except in a workflow she may enter again, where it says why she did not.
        # A transaction rolled back and done again (one event of a batch failed) refuses the
        # same entry twice, at the same instant: it is one refusal.
        if db is self.runtime.db and (refusal.kind != "in it" or self._reenters(refusal)):
            self._refused.setdefault(refusal)

    def _reenters(self, refusal: Refusal) -> bool:
        """Whether the workflow lets a contact in again: then "already in it" is why a
        trigger the test meant as a second entry did nothing, worth its line."""
        workflow = self.runtime.registry.workflows.get(refusal.workflow)
        return workflow is not None and workflow.reentry.policy != "never"

    # --- expecting ----------------------------------------------------------------------

    def _know(self, registry: Registry) -> None:
        self._workflows.update(registry.workflows)
        for workflow in registry.workflows.values():
            steps = {node.id for node in workflow.program if isinstance(node.step, SendEmail)}
            self._steps_of.setdefault(workflow.name, set()).update(steps)
            self._steps.update(steps)

    def _unknown_step(self, step: str) -> str | None:
        """Why ``step``, written as a step id, names no email step of any workflow, or None
        when it does, or when it reads as a subject (anything but a bare identifier: "Your
        trial ends soon" may rightly have gone to nobody yet)."""
        if step in self._steps or not _STEP_ID.fullmatch(step):
            return None
        if any(m.subject == step for m in self.email.sent):
            return None
        return (
            f"no workflow has an email step {step!r} and no email with that subject went "
            f"out{_close(step, self._steps)}"
        )

    def _names_nothing(self, to: str, step: str | None, workflow: str | None = None) -> str:
        """Why an expectation of no such email could never fail (a contact the simulation
        never saw, a step or workflow that does not exist, a step of another workflow), or
        "" when it could."""
        address = normalize_email(to)
        if not self._exists(address):
            return f"the simulation has no contact {address!r}{_close(address, self._addresses())}"
        if workflow is not None and workflow not in self._workflows:
            return f"there is no workflow {workflow!r}{_close(workflow, self._workflows)}"
        if step is None:
            return ""
        unknown = self._unknown_step(step)
        if unknown:
            return unknown
        if workflow is not None and _STEP_ID.fullmatch(step):
            own = self._steps_of.get(workflow, set())
            if step not in own and not any(m.subject == step for m in self.email.sent):
                return f"workflow {workflow!r} has no email step {step!r}{_close(step, own)}"
        return ""

    def _exists(self, address: str) -> bool:
        with Session(self.runtime.db) as session:
            found = session.exec(select(Contact.id).where(Contact.email == address)).first()
        return found is not None

    def _addresses(self) -> list[str]:
        with Session(self.runtime.db) as session:
            return list(session.exec(select(Contact.email)).all())

    def _unknown(self, kind: str, name: str, known: Sequence[str] | set[str]) -> str:
        if name in known:
            return ""
        return f" (there is no {kind} {name!r}{_close(name, known)})"

    def fail(self, email: str, message: str) -> None:
        __tracebackhide__ = True  # pytest shows the test's line, not the harness's
        raise JourneyAssertionError(f"{message}\n\nTimeline of {email}:\n{self.explain(email)}")

    def expect_email(
        self,
        to: str,
        step: str,
        *,
        times: int = 1,
        workflow: str | None = None,
        at_local: str | None = None,
    ) -> list[SentEmail]:
        """``step`` is a step id (or a subject); ``at_local`` "HH:MM" in the time zone the
        contact had when each email went out (a zone changed by ``track(...,
        timezone=...)`` or ``contact_import`` counts from then on; for a contact the harness
        never saw, one made through ``sim.runtime``, the current zone)."""
        __tracebackhide__ = True
        if isinstance(times, bool) or not isinstance(times, int) or times < 0:
            raise ValueError(f"expect_email: times={times!r} is not a count (0, 1, 2, ...)")
        wanted = _local_time(at_local) if at_local is not None else None
        found = self.emails(to, workflow=workflow, step=step)
        # A name that names nothing, or someone the simulation never saw, finds nothing:
        # with times=0 the expectation would pass whatever happened.
        pointless = "" if found else self._names_nothing(to, step, workflow)
        if pointless and times == 0:
            raise JourneyAssertionError(
                f"expect_email({to!r}, {step!r}, times=0) would pass whatever happened: {pointless}"
            )
        if len(found) != times:
            why = f" ({pointless})" if pointless else ""
            self.fail(to, f"expected {times} email(s) {step!r} to {to}, found {len(found)}{why}")
        for sent in found:
            local = sent.sent_at_local.strftime("%H:%M")
            if wanted is not None and local != wanted:
                self.fail(
                    to,
                    f"email {step!r} went out at {local} local ({sent.timezone}), "
                    f"not {wanted}{self._clocks_changed(to, sent, wanted)}",
                )
        return found

    def _clocks_changed(self, to: str, sent: SentEmail, at_local: str) -> str:
        """Why an email is an hour off the local time expected, when a daylight-saving
        change lies between it and the contact's previous email (or her creation) and the
        old offset gives the expected time: a relative wait keeps its length in hours."""
        earlier = [e.sent_at for e in self.emails(to) if e.sent_at < sent.sent_at]
        since = earlier[-1] if earlier else self.contact(to).created_at
        tz = zone(sent.timezone)
        before, after = since.astimezone(tz).utcoffset(), sent.sent_at_local.utcoffset()
        if before is None or before == after:
            return ""
        if (sent.sent_at + before).strftime("%H:%M") != at_local:
            return ""
        return (
            f": {sent.timezone} went from {_utc_offset(before)} to "
            f"{_utc_offset(after)} since {since.astimezone(tz):%a %d %b %H:%M} local, and a "
            f"relative wait (wait(days=...), a timeout) keeps its length in hours; "
            f'wait_until("{at_local}") keeps the local time'
        )

    def expect_no_email(self, to: str, step: str | None = None) -> None:
        """No email to ``to`` (of ``step``, a step id or a subject). A ``step`` that names
        no email at all is refused: the expectation would pass whatever the workflows did."""
        __tracebackhide__ = True
        unknown = self._names_nothing(to, step)
        if unknown:
            shown = f"{to!r}, {step!r}" if step is not None else repr(to)
            raise JourneyAssertionError(
                f"expect_no_email({shown}) would pass whatever happened: {unknown}"
            )
        found = self.emails(to, step=step)
        if found:
            what = f"{step!r} " if step else ""
            self.fail(
                to, f"expected no email {what}to {to}, found {[s.template_step for s in found]}"
            )

    def expect_stage(self, email: str, stage: str) -> None:
        __tracebackhide__ = True
        actual = self.contact(email).stage
        if actual != stage:
            stages = self.runtime.registry.journey.stage_names
            self.fail(
                email,
                f"expected {email} in stage {stage!r}, found {actual!r}"
                + self._unknown("stage", stage, stages),
            )

    def expect_enrollment(self, email: str, workflow: str, status: str) -> Enrollment:
        __tracebackhide__ = True
        statuses = [s.value for s in EnrollmentStatus]
        if status not in statuses:
            raise ValueError(
                f"expect_enrollment: status {status!r} is none of {', '.join(statuses)}"
                f"{_close(status, statuses)}"
            )
        contact = self.contact(email)
        with Session(self.runtime.db) as session:
            found = session.exec(
                select(Enrollment)
                .where(Enrollment.contact_id == contact.id, Enrollment.workflow == workflow)
                .order_by(col(Enrollment.entry).desc())
            ).first()
        if found is None:
            self.fail(
                email,
                f"expected {email} to have entered {workflow!r}; never did"
                + self._unknown("workflow", workflow, self._workflows),
            )
        assert found is not None
        if found.status != status:
            self.fail(
                email,
                f"expected {email} {status} in {workflow!r}, found {found.status}"
                f" ({found.context.get('end_reason', 'still running')})",
            )
        return found

    # --- golden journeys ----------------------------------------------------------------

    def journey(self, email: str) -> list[dict[str, Any]]:
        """The contact's timeline, reduced to what behaviour is, for goldens: no row ids
        (``goal reached: demo.requested (event 3)`` reads ``(event)``), so that other
        contacts tracked first do not change it."""
        timeline = self.timeline(email)
        if timeline is None:  # a golden of nobody would record "[]" and always match
            address = normalize_email(email)
            raise JourneyAssertionError(
                f"no contact {address!r} in this simulation to take a journey of"
                f"{_close(address, self._addresses())}"
            )
        return [
            {"at": e.at.isoformat(), "kind": e.kind, "summary": _ROW_ID.sub(r"(\1)", e.summary)}
            for e in timeline.entries
        ]

    # --- time zones as the harness saw them ---------------------------------------------

    def _note_zone(self, email: str, mark: int | None = None) -> int:
        """Note the contact's time zone if it changed since last noted, as of the email
        ``mark`` (default: the next one to go out); return how many have gone out."""
        sent = len(self.email.sent)
        address = normalize_email(email)
        with Session(self.runtime.db) as session:
            timezone = session.exec(
                select(Contact.timezone).where(Contact.email == address)
            ).first()
        seen = self._zones.setdefault(address, [])
        if timezone is not None and (not seen or seen[-1][1] != timezone):
            seen.append((sent if mark is None else mark, timezone))
        return sent

    def _zone_of(self, address: str, index: int) -> str:
        """The contact's time zone when the ``index``-th email went out (as the harness saw
        it change; the current one for a contact it never saw)."""
        seen = self._zones.get(address)
        if not seen:
            return self._current_zone(address)
        return next((z for mark, z in reversed(seen) if mark <= index), seen[0][1])

    def _current_zone(self, address: str) -> str:
        with Session(self.runtime.db) as session:
            timezone = session.exec(
                select(Contact.timezone).where(Contact.email == address)
            ).first()
        return timezone or "UTC"

    def close(self) -> None:
        self._listening.close()
        self.runtime.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _step(delta: Any, kwargs: Mapping[str, Any]) -> timedelta:
    """What ``advance`` was asked to move by, refusing what would not be a move forward."""
    if delta is not None and kwargs:
        raise TypeError(
            f"advance: give a timedelta or keywords (days=..., hours=...), not both: "
            f"advance({delta!r}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        )
    if delta is not None and not isinstance(delta, timedelta):
        raise TypeError(f"advance: {delta!r} is not a timedelta; write advance(days=1, hours=2)")
    try:
        step = delta if delta is not None else timedelta(**kwargs)
    except TypeError as exc:
        raise TypeError(
            f"advance: {exc} (it takes weeks, days, hours, minutes, seconds; months and years "
            "have no fixed length: give them in days)"
        ) from None
    if step < timedelta(0):
        raise ValueError(f"advance: virtual time only moves forward, not back by {-step}")
    return step


def _local_time(text: Any) -> str:
    """``at_local`` as ``HH:MM`` (``"9:00"`` reads ``"09:00"``); anything else is refused."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f'at_local={text!r} is not a local time of day as "HH:MM" ("09:00")')
    return f"{int(match[1]):02d}:{match[2]}"


def _utc_offset(offset: timedelta | None) -> str:
    """``UTC+01:00``, ``UTC-05:00``."""
    minutes = int((offset or timedelta()).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


TYPO_CUTOFF = 0.85
"""How alike an unknown event type must be to a known one for ``track`` to refuse it as a
typo: ``webinar.atended`` (0.97) and ``trial.strated`` (0.92) are; ``signup.completed``
against ``order.completed`` (0.71) and ``webinar.registered`` against
``webinar.attended`` (0.69) are types of the user's own, recorded as in production."""


def _close(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``"; did you mean 'reminder'?"`` for a likely typo of a known name, else nothing."""
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=cutoff)
    return f"; did you mean {match[0]!r}?" if match else ""


def _with_refusals(
    entries: Sequence[Entry], refused: Sequence[Refusal]
) -> list[tuple[datetime, str, str]]:
    """The timeline's lines with each refused entry after what happened at its instant."""
    lines: list[tuple[datetime, str, str]] = []
    waiting = sorted(refused, key=lambda r: r.at)
    for entry in entries:
        while waiting and waiting[0].at < entry.at:
            first = waiting.pop(0)
            lines.append((first.at, "refused", f"{first.workflow}: {first.reason}"))
        lines.append((entry.at, entry.kind, entry.summary))
    lines += [(r.at, "refused", f"{r.workflow}: {r.reason}") for r in waiting]
    return lines


def _journey_lines(journey: Any) -> list[str]:
    """A journey's entries as timeline lines: ``2026-01-05T09:00:00+00:00  action  ...``."""
    if not isinstance(journey, list):
        raise TypeError("a journey is a list of entries")
    return [f"{e['at']}  {e['kind']:<10} {e['summary']}" for e in journey]


def _load(workflows: str | ModuleType | Registry, templates_dir: Path | None) -> Registry:
    if isinstance(workflows, Registry):
        return workflows
    if isinstance(workflows, ModuleType):
        return registry_from_module(workflows, templates_dir=templates_dir)
    return load_registry(workflows, templates_dir=templates_dir)


GoldenOutcome = Literal["matched", "recorded", "updated"]


def check_golden(
    journey: Sequence[Mapping[str, Any]], path: Path, *, update: bool
) -> GoldenOutcome:
    """Compare a journey with its golden file, writing it when missing (``"recorded"``) or
    when ``update`` and it differs (``"updated"``); ``"matched"`` when it was the same.

    The ``journeyline_golden`` fixture refuses to record a missing file in CI (see
    ``engine.testing.plugin``); called directly, this always records it."""
    __tracebackhide__ = True  # pytest shows the test's line and the diff, not this code
    import json

    text = json.dumps(list(journey), indent=2, sort_keys=True) + "\n"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return "recorded"
    expected = path.read_text()
    if expected == text:
        return "matched"
    if update:
        path.write_text(text)
        return "updated"
    # A line per timeline entry, as the timeline reads, rather than the file's JSON.
    try:
        before = _journey_lines(json.loads(expected))
    except (ValueError, TypeError, KeyError):  # not a journey (edited by hand): its text
        before, after = expected.splitlines(), text.splitlines()
    else:
        after = _journey_lines(journey)
    diff = "\n".join(
        difflib.unified_diff(
            before, after, fromfile=f"{path} (golden)", tofile="this run", lineterm=""
        )
    )
    raise JourneyAssertionError(
        f"the journey differs from {path} (set JOURNEYLINE_UPDATE_GOLDEN=1 to accept):\n{diff}"
    )
