"""A rules file's text and the mapping from character index to line and column."""

from __future__ import annotations

import bisect


class Source:
    """The text of one rules file; turns character indexes into 1-based (line, col)."""

    __slots__ = ("_starts", "filename", "lines", "text")

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.lines = text.splitlines() or [""]
        starts = [0]
        i = text.find("\n")
        while i >= 0:
            starts.append(i + 1)
            i = text.find("\n", i + 1)
        self._starts = starts

    def position(self, index: int) -> tuple[int, int]:
        """1-based line and column of a character index (clamped into the text)."""
        index = max(0, min(index, len(self.text)))
        row = bisect.bisect_right(self._starts, index) - 1
        return row + 1, index - self._starts[row] + 1

    def line_text(self, line: int) -> str:
        if 1 <= line <= len(self.lines):
            return self.lines[line - 1]
        return ""
