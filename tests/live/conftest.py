"""The demo data fixtures of the server tests, for the live-activity tests."""

from tests.server.conftest import demo_copy, demo_data

__all__ = ["demo_copy", "demo_data"]
