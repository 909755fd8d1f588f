"""The shared ASGI helpers (server/asgi.py) on what a caller may send."""

from __future__ import annotations

import pytest

from server.asgi import content_length


@pytest.mark.parametrize(
    ("declared", "length"),
    [
        (None, None),
        (b"", None),
        (b"28", 28),
        ("28", 28),
        (b"0", 0),
        (b"000", 0),
        (b"0" * 5000 + b"28", 28),  # int() alone refuses a string this long: a 500 before
        (b"9" * 30, 1 << 64),  # larger than any limit, not an error
        (b"-1", None),
        (b"1e3", None),
        (b" 28", None),
        ("\u00b2", None),  # a digit to str.isdigit(), not to HTTP
        ("\u0661", None),
    ],
)
def test_a_declared_content_length_is_a_number_or_none_never_an_error(
    declared: bytes | str | None, length: int | None
) -> None:
    assert content_length(declared) == length
