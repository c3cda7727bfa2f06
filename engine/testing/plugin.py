"""The pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

- ``journeyline_sim``: a ``Simulation`` of the workflows module from settings
  (``JOURNEYLINE_WORKFLOWS``, default ``workflows``), closed after the test; the module is
  looked for in the folders at and above the test file first (see ``workflows_near``);
- ``journeyline_golden``: ``check(sim, email, name)`` compares a contact's journey with
  ``golden/<name>.json`` next to the test file.

What a golden check does with a missing or differing file (``--journeyline-golden=MODE``,
else from the environment):

- ``record`` (the default on a developer's machine): a missing golden is written and the
  test passes; the end of the run lists every file recorded, to check and commit;
- ``strict`` (the default when ``CI`` is set to a true value: ``true``, ``1``, ``yes``): a
  missing golden fails the test, saying how to record it; CI never passes on a journey
  nobody looked at;
- ``update`` (``JOURNEYLINE_UPDATE_GOLDEN=1``): a missing or differing golden is
  (re)written, accepting an intended change.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from engine.registry import import_workflows
from engine.testing.simulation import Simulation, check_golden

GOLDEN_MODES = ("record", "strict", "update")
_WRITTEN = "journeyline_golden"  # a test's user property: "<outcome> <golden file>"
_TRUE = {"1", "true", "yes", "on"}
# The journey each golden file was first checked against in this run, and by which test
# for whom: two different journeys under one name would each pass an update run, the last
# one written winning (the same journey twice, a parametrized test's, is fine).
_CLAIMED = pytest.StashKey[dict[Path, tuple[str, str, list[Any]]]]()


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("journeyline")
    group.addoption(
        "--journeyline-golden",
        choices=GOLDEN_MODES,
        default=None,
        help="record: write missing golden journeys (default); strict: a missing one fails "
        "(default when CI is set); update: rewrite missing and differing ones (as "
        "JOURNEYLINE_UPDATE_GOLDEN=1)",
    )


def golden_mode(config: pytest.Config) -> str:
    """The option if given, else ``update`` with ``JOURNEYLINE_UPDATE_GOLDEN``, else
    ``strict`` in CI, else ``record``."""
    chosen = config.getoption("--journeyline-golden", default=None)
    if chosen:
        return str(chosen)
    if _true(os.environ.get("JOURNEYLINE_UPDATE_GOLDEN")):
        return "update"
    if _true(os.environ.get("CI")):
        return "strict"
    return "record"


@pytest.fixture
def journeyline_sim(request: pytest.FixtureRequest) -> Iterator[Simulation]:
    sim = Simulation(workflows_near(Path(str(request.path))))
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
def journeyline_golden(request: pytest.FixtureRequest) -> Callable[[Simulation, str, str], None]:
    folder = Path(str(request.path)).parent / "golden"
    mode = golden_mode(request.config)

    def check(sim: Simulation, email: str, name: str) -> None:
        __tracebackhide__ = True  # a differing journey shows the test's line and the diff
        path = folder / f"{name}.json"
        journey = list(sim.journey(email))
        claimed = request.config.stash.setdefault(_CLAIMED, {})
        test, whose, first = claimed.setdefault(
            path.resolve(), (request.node.nodeid, email, journey)
        )
        if first != journey:
            pytest.fail(
                f"golden journey {_shown(request.config, path)} was checked in this run for "
                f"{whose} by {test}, whose journey differs from {email}'s here: give each "
                "journey a name of its own",
                pytrace=False,
            )
        if mode == "strict" and not path.exists():
            why = (
                "--journeyline-golden=strict"
                if request.config.getoption("--journeyline-golden", default=None)
                else "CI is set"
            )
            pytest.fail(
                f"no golden journey {_shown(request.config, path)} for {email} ({why}: a "
                "missing golden fails rather than being recorded). Record it where you "
                f"develop with\n    JOURNEYLINE_UPDATE_GOLDEN=1 pytest '{request.node.nodeid}'\n"
                "(or a plain run there, outside CI), check what it holds and commit it.",
                pytrace=False,
            )
        outcome = check_golden(journey, path, update=mode == "update")
        if outcome != "matched":
            request.node.user_properties.append((_WRITTEN, f"{outcome} {path}"))

    return check


def workflows_near(test_file: Path) -> str | ModuleType:
    """The workflows module (``JOURNEYLINE_WORKFLOWS``, default ``workflows``) of the project
    a test file belongs to: the nearest folder at or above the test that holds it, whatever
    the folder pytest runs from. Without that, a run from ``tests/`` or elsewhere would
    import whatever module of that name is on the Python path: Journeyline's own playbook,
    also called ``workflows``, rather than yours. None found: the name, looked for as the
    CLI does (the current folder, then the Python path)."""
    name = os.environ.get("JOURNEYLINE_WORKFLOWS", "workflows")
    top = name.partition(".")[0]
    if not all(part.isidentifier() for part in name.split(".")):
        return name  # import_workflows says what is wrong with it
    home = next(
        (
            folder
            for folder in test_file.parents
            if (folder / top / "__init__.py").is_file() or (folder / f"{top}.py").is_file()
        ),
        None,
    )
    if home is None:
        return name
    loaded = sys.modules.get(top)
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        ours = {(home / top / "__init__.py").resolve(), (home / f"{top}.py").resolve()}
        if where is not None and Path(where).resolve() not in ours:
            pytest.fail(
                f"the workflows module {top!r} of this test's project is {home / top}, but "
                f"{top!r} was already imported from {where} (a test module or conftest "
                f"imported it first from the Python path): run pytest from {home}, or add "
                f"it to the Python path (PYTHONPATH, or pytest's pythonpath ini option)",
                pytrace=False,
            )
        return import_workflows(name)
    sys.path.insert(0, str(home))
    importlib.invalidate_caches()
    try:
        return import_workflows(name)
    finally:
        # Only for this import: the package keeps its own path for its submodules.
        if str(home) in sys.path:
            sys.path.remove(str(home))


def _shown(config: pytest.Config, path: Path) -> str:
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


class _GoldenReport:
    """Lists the golden files a run wrote at its end. From the reports' user properties,
    which also reach the controller of a distributed (xdist) run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.written: dict[str, tuple[str, str]] = {}  # file -> (outcome, test)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == _WRITTEN:
                outcome, _, path = str(value).partition(" ")
                self.written[path] = (outcome, report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.written:
            return
        terminalreporter.section("journeyline golden journeys written")
        for path, (outcome, test) in sorted(self.written.items()):
            terminalreporter.write_line(
                f"{outcome} {_shown(self.config, Path(path))} (by {test})", yellow=True
            )
        terminalreporter.write_line("check what they hold, and commit them")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_GoldenReport(config), "journeyline-golden-report")
