"""bench.layers: a py-spy profile split by layer, and the bounds it gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import layers

RUN = "<module> (run.py:5);simulate (engine/simulator.py:179);_run_shard (engine/simulator.py:397)"
PROFILE = "\n".join(
    [
        f"{RUN};Session.execute (sqlalchemy/orm/session.py:2555) 40",
        f"{RUN};DefaultDialect.do_execute (sqlalchemy/engine/default.py:951) 20",
        f"{RUN};_sqlite_text (engine/db.py:78) 5",
        f"{RUN};dumps (json/__init__.py:231) 5",
        f"{RUN};StageMachine.fire (engine/machine.py:149) 20",
        "<module> (run.py:2);<module> (engine/__init__.py:3);_load (<frozen importlib>:1) 10",
        "",
        "a line with no count",
    ]
)


def test_each_sample_is_charged_to_its_innermost_frames_layer() -> None:
    counts, total = layers.shares(PROFILE.splitlines())
    assert total == 100
    assert counts == {
        "SQLAlchemy + SQLModel": 40,
        "SQLite (C)": 20,
        "row plumbing": 5,
        "JSON": 5,
        "pipeline": 20,
        "start-up": 10,
    }


def test_the_bounds_leave_start_up_out() -> None:
    text = layers.report(*layers.shares(PROFILE.splitlines()))
    # work 0.9 of the samples, database 0.7 of them: 0.9 / 0.2 with a free database layer
    assert "database layer, in all     70.0%" in text
    assert "at most 4.50x faster if the database layer cost nothing" in text
    assert "at most 2.65x faster with a store costing 1/5 of it" in text  # 0.9 / 0.34
    assert "at most 2.25x faster if only SQLite's own work remained" in text  # 0.9 / 0.4


def test_a_file_with_no_samples_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.raw"
    empty.write_text("not a profile\n")
    assert layers.main([str(empty)]) == 2
    assert "no samples" in capsys.readouterr().err


def test_the_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "sim.raw"
    profile.write_text(PROFILE)
    assert layers.main([str(profile)]) == 0
    assert "SQLite (C)                 20.0%" in capsys.readouterr().out
