"""A workflows module that cannot be imported: one clear error, never a traceback.

Whatever goes wrong importing the user's module (a mistake in their code, a module that is
not where the command looks) comes out of every command that loads workflows as one error
naming the file and line of the user's code, or what was looked for, where, and how to fix it.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from engine import WorkflowDefinitionError, load_registry
from engine.cli import _register_subcommands, app
from engine.errors import ConfigurationError, WorkflowImportError

_register_subcommands()

HEADER = """\
from datetime import timedelta
from engine import Workflow, on_event, send_email, wait, wait_for_event
"""
GOOD = """\
WORKFLOWS = [
    Workflow("hello", trigger=on_event("contact.created"), steps=[send_email("welcome")]),
]
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder ``tmp_path/userflows`` for a workflows package, named by
    JOURNEYLINE_WORKFLOWS, forgotten by ``sys.modules`` afterwards; the caller decides
    whether its parent is on ``sys.path``."""
    folder = tmp_path / "userflows"
    (folder / "templates").mkdir(parents=True)
    shipped = Path(__file__).parent.parent / "workflows" / "templates" / "welcome.j2"
    (folder / "templates" / "welcome.j2").write_text(shipped.read_text())
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "userflows")
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps nothing: one message, one line
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored, whatever the loader adds
    yield folder
    for name in [n for n in sys.modules if n == "userflows" or n.startswith("userflows.")]:
        del sys.modules[name]


def _importable(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(package.parent))


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def _assert_one_error(result: Result, *, code: int) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert "Traceback" not in result.output
    return result.output


# --- a mistake in the user's code -----------------------------------------------------------

MISTAKES = {
    "misspelt argument": (
        HEADER + "WORKFLOWS = [\n"
        '    Workflow("w", trigger=on_event("contact.created"), steps=[\n'
        "        wait(dayz=2),\n"
        "    ]),\n]\n",
        "wait(dayz=2)",
        "TypeError: wait() got an unexpected keyword argument 'dayz'",
    ),
    "name error": (
        HEADER + "STEPS = [send_email('welcome'), wiat(days=2)]\n" + GOOD,
        "wiat(days=2)",
        "NameError: name 'wiat' is not defined",
    ),
    "syntax error": (
        HEADER + "STEPS = [send_email('welcome'),, wait(days=2)]\n" + GOOD,
        "STEPS =",
        "SyntaxError: invalid syntax",
    ),
    "missing dependency": (
        HEADER + "import no_such_helper_module\n" + GOOD,
        "import no_such_helper_module",
        "ModuleNotFoundError: No module named 'no_such_helper_module'",
    ),
    "wrong builder argument": (
        HEADER + "STEPS = [wait(days='2')]\n" + GOOD,
        "wait(days='2')",  # raised inside the engine: the user's line is named, not ours
        "TypeError: unsupported type for timedelta days component: str",
    ),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_mistake_in_the_module_is_one_error_with_its_file_and_line(
    package: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # Given a workflows module whose code raises when imported
    source, culprit, message = MISTAKES[case]
    (package / "__init__.py").write_text(source)
    _importable(package, monkeypatch)
    # When the operator checks it
    result = invoke("workflows", "check")
    # Then one error names the user's file and line, and what went wrong there
    output = _assert_one_error(result, code=1)
    assert f"{package / '__init__.py'}:{_line_of(source, culprit)}: {message}" in output
    assert "importing workflows module 'userflows'" in output
    assert len(output.strip().splitlines()) == 1, output


def test_a_mistake_in_a_submodule_names_that_file(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = HEADER + textwrap.dedent("""
        DRIP = Workflow("drip", trigger=on_event("contact.created"), steps=[
            wait_for_event("trial.started", timeout=timedelta(days=2),
                           plan=),
        ])
        """)
    (package / "drips.py").write_text(source)
    (package / "__init__.py").write_text("from userflows.drips import DRIP\nWORKFLOWS = [DRIP]\n")
    _importable(package, monkeypatch)
    output = _assert_one_error(invoke("workflows", "check"), code=1)
    assert f"{package / 'drips.py'}:{_line_of(source, 'plan=)')}: SyntaxError" in output


def test_the_loader_raises_a_definition_error_chained_to_the_cause(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = HEADER + "X = 1 / 0\n" + GOOD
    (package / "__init__.py").write_text(source)
    _importable(package, monkeypatch)
    with pytest.raises(WorkflowDefinitionError) as info:
        load_registry("userflows")
    assert isinstance(info.value, WorkflowImportError)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert str(info.value) == info.value.problems[0]
    assert str(info.value).startswith(
        f"{package / '__init__.py'}:{_line_of(source, 'X = 1 / 0')}: ZeroDivisionError"
    )


def test_other_commands_that_load_workflows_give_the_same_error(
    package: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a module with a mistake, and a command that starts the runtime
    source = HEADER + "STEPS = [wait(dayz=2)]\n" + GOOD
    (package / "__init__.py").write_text(source)
    _importable(package, monkeypatch)
    monkeypatch.setenv("JOURNEYLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'jl.db'}")
    # When it loads the workflows, then it exits 2, as for any configuration problem
    output = _assert_one_error(invoke("broadcast", "hello"), code=2)
    assert f"__init__.py:{_line_of(source, 'STEPS =')}: TypeError: wait()" in output
    assert issubclass(WorkflowImportError, ConfigurationError)


def test_commands_that_load_workflows_list_validation_problems_without_a_traceback(
    package: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a module that imports but does not validate (an unknown template and event)
    source = HEADER + (
        "WORKFLOWS = [Workflow('hello', trigger=on_event('contact.created'), steps=["
        "send_email('no_such_template'), wait_for_event('never.happens', "
        "timeout=timedelta(days=1))])]\n"
    )
    (package / "__init__.py").write_text(source)
    _importable(package, monkeypatch)
    monkeypatch.setenv("JOURNEYLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'jl.db'}")
    # When a command starts the runtime, then it lists every problem and exits 2
    output = _assert_one_error(invoke("broadcast", "hello"), code=2)
    assert "2 problem(s) in workflow definitions" in output
    assert "'no_such_template' not found" in output and "never.happens" in output


# --- where the module is looked for ---------------------------------------------------------


def _without_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under the installed ``journeyline`` script: the current directory (which
    ``python -m pytest`` put on the path as '') is not on ``sys.path``."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])


def test_a_module_in_the_working_directory_is_found(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the operator stands in the folder holding their package, not on the path
    (package / "__init__.py").write_text(HEADER + GOOD)
    monkeypatch.chdir(package.parent)
    _without_working_directory(monkeypatch)
    # When they check it, then it is found there, as `python -m` would find it
    result = invoke("workflows", "check")
    assert result.exit_code == 0, result.output
    assert "1 workflows OK in userflows" in result.output
    # And the folder is on the path only for that import: nothing imported later is shadowed
    assert str(package.parent) not in sys.path


def test_a_module_not_found_says_what_where_and_how_to_fix_it(
    package: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given JOURNEYLINE_WORKFLOWS names a module that is nowhere to be found
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _without_working_directory(monkeypatch)
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "userflows")
    # When the operator checks it
    output = _assert_one_error(invoke("workflows", "check"), code=1)
    # Then one line says what was looked for, where, and how to fix it
    assert len(output.strip().splitlines()) == 1, output
    for words in (
        "workflows module 'userflows' not found",
        "userflows/__init__.py or userflows.py",
        f"current directory ({elsewhere})",
        "PYTHONPATH",
        "JOURNEYLINE_WORKFLOWS",
    ):
        assert words in output, words


def test_a_path_instead_of_a_module_name_is_explained(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "userflows/")
    output = _assert_one_error(invoke("workflows", "check"), code=1)
    assert "JOURNEYLINE_WORKFLOWS='userflows/' is not a module name" in output
    assert "(e.g. 'userflows')" in output
