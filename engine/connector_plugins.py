"""Connectors of the user's own, named in settings as ``module:factory``.

``JOURNEYLINE_EMAIL_CONNECTOR=acme.postmark:connector`` or
``JOURNEYLINE_CRM_CONNECTOR=acme.pipedrive:connector`` names a callable that takes the
``Settings`` and returns an ``EmailConnector`` or a ``CRMConnector``. It is imported and
called wherever a runtime is built (``journeyline worker``, ``serve``, the CLI), so every
process uses the same connector. Anything wrong (a module that does not import, no such
attribute, a factory that raises or returns something else) is a ``ConfigurationError``
naming the setting, which every command prints as one line.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from connectors.crm import CRMConnector
from connectors.email import EmailConnector
from engine.errors import ConfigurationError
from engine.settings import Settings

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_SPEC = re.compile(rf"^(?P<module>{_DOTTED}):(?P<attribute>{_DOTTED})$")


def is_plugin(name: str) -> bool:
    """Whether a connector setting names a factory (``module:factory``), not a built-in."""
    return ":" in name


def plugin_email_connector(settings: Settings) -> EmailConnector:
    """The ``EmailConnector`` that ``JOURNEYLINE_EMAIL_CONNECTOR``'s factory returns."""
    setting = "JOURNEYLINE_EMAIL_CONNECTOR"
    return _plugin(settings.email_connector, setting, settings, EmailConnector)


def plugin_crm_connector(settings: Settings) -> CRMConnector:
    """The ``CRMConnector`` that ``JOURNEYLINE_CRM_CONNECTOR``'s factory returns."""
    return _plugin(settings.crm_connector, "JOURNEYLINE_CRM_CONNECTOR", settings, CRMConnector)


def _plugin(spec: str, setting: str, settings: Settings, kind: type[object]) -> Any:
    """What the factory ``spec`` returns, refused unless it is a ``kind``."""
    connector = _made(spec, setting, settings)
    if not isinstance(connector, kind):
        raise ConfigurationError(
            f"{setting}={spec!r}: {spec.partition(':')[2]}(settings) returned a "
            f"{type(connector).__name__}, not a {kind.__name__}"
        )
    return connector


def _made(spec: str, setting: str, settings: Settings) -> object:
    """What the factory ``spec`` names returns when called with ``settings``."""
    where = f"{setting}={spec!r}"
    match = _SPEC.match(spec)
    if match is None:
        raise ConfigurationError(
            f"{where}: a connector of your own is named module:factory "
            "(acme.connectors:make_crm), a callable taking the settings"
        )
    try:
        module = importlib.import_module(match["module"])
    except Exception as exc:  # the user's module failed to import: say which and why
        raise ConfigurationError(
            f"{where}: cannot import {match['module']} ({type(exc).__name__}: {exc}); "
            "is it installed, or on PYTHONPATH, where every worker runs?"
        ) from exc
    factory: Any = module
    for name in match["attribute"].split("."):
        if not hasattr(factory, name):
            raise ConfigurationError(f"{where}: {match['module']} has no {match['attribute']}")
        factory = getattr(factory, name)
    if not callable(factory):
        raise ConfigurationError(f"{where}: {match['attribute']} is not callable")
    try:
        connector = factory(settings)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    except Exception as exc:  # the user's factory raised: name it, with its message
        raise ConfigurationError(
            f"{where}: {match['attribute']}(settings) raised {type(exc).__name__}: {exc}"
        ) from exc
    return connector
