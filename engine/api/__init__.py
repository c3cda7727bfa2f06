"""Journeyline's HTTP service (FastAPI): ``create_app(runtime)``; ``journeyline serve`` runs it."""

from engine.api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
