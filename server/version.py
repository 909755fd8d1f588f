"""The installed distribution's version: what `pip install` put there, not a constant to bump."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    try:
        return version("edgeside")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0"
