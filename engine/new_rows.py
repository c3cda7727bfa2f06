"""New table rows for the pipeline's hot path, built without SQLModel's per-field ``__init__``.

``Action(...)`` on a SQLModel table model sets every field through ``__setattr__``, which
writes it twice (SQLAlchemy's instrumented attribute, then pydantic's): about 130 µs for an
action on this machine, and the pipeline builds one per step, enrollment and stage change.
``new_row`` builds the same object (SQLAlchemy's instance state, the same ``__dict__``, the
same ``model_fields_set``) in about 5 µs: the values go straight into the instance
dictionary, which is where SQLAlchemy reads a pending object's columns at the flush.

Table models do not validate on construction either way, so nothing is skipped but the
double writes; unlike the constructor, an unknown or missing field is an error here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel

T = TypeVar("T", bound=SQLModel)

_IMMUTABLE = (type(None), bool, int, float, str, bytes, Decimal, Enum, date, datetime, time,
              timedelta)  # fmt: skip


class _Recipe:
    """What a class's rows start from: its defaults, fixed or made per row."""

    def __init__(self, cls: type[SQLModel]) -> None:
        self.fixed: dict[str, Any] = {}
        self.made: dict[str, Callable[[], Any]] = {}
        self.required: frozenset[str] = frozenset(
            name for name, field in cls.model_fields.items() if field.is_required()
        )
        self.names = frozenset(cls.model_fields)
        for name, field in cls.model_fields.items():
            if field.is_required():
                continue
            if field.default_factory is None and isinstance(field.default, _IMMUTABLE):
                self.fixed[name] = field.default
            else:  # a factory, or a mutable default pydantic would copy for each instance
                self.made[name] = partial(field.get_default, call_default_factory=True)
        self.manager: Any = cls._sa_class_manager  # type: ignore[attr-defined]
        # The constructor configures the mappers on first use; building rows without it
        # must too, or setting an attribute on the first row fails.
        configure_mappers()


_RECIPES: dict[type[SQLModel], _Recipe] = {}


def new_row(cls: type[T], **values: Any) -> T:
    """A new, transient ``cls`` row with ``values``, as ``cls(**values)`` would build it."""
    recipe = _RECIPES.get(cls)
    if recipe is None:
        recipe = _RECIPES[cls] = _Recipe(cls)
    unknown = values.keys() - recipe.names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    missing = recipe.required - values.keys()
    if missing:
        raise TypeError(f"{cls.__name__} needs {', '.join(sorted(missing))}")
    row = recipe.manager.new_instance()  # SQLAlchemy's instance state, no __init__
    fields = row.__dict__
    fields.update(recipe.fixed)
    for name, make in recipe.made.items():
        if name not in values:
            fields[name] = make()
    fields.update(values)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    object.__setattr__(row, "__pydantic_extra__", None)
    object.__setattr__(row, "__pydantic_private__", None)
    return row  # type: ignore[no-any-return]
