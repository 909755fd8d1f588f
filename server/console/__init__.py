"""The marketer's console (issue 19): rules editor with live checking, preview with explain,
impact replay, shadow and promote, analytics — served by edgeside itself at `/console`."""

from __future__ import annotations

from .routes import Console

__all__ = ["Console"]
