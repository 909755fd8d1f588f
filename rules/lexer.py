"""Tokens of the expression language, each with its offsets."""

from __future__ import annotations

from dataclasses import dataclass


class SyntaxProblem(Exception):
    """A lexing or parsing problem at an offset of the expression (caught, becomes a Diagnostic)."""

    def __init__(self, message: str, start: int, end: int, code: str = "syntax") -> None:
        super().__init__(message)
        self.message = message
        self.start = start
        self.end = end
        self.code = code


@dataclass(slots=True)
class Token:
    kind: str  # "num" "str" "name" "op" "eof"
    text: str
    start: int
    end: int
    value: str | int | float | None = None


KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_TWO = frozenset({"==", "!=", "<=", ">="})
_ONE = frozenset("()[],.<>+-*/%")
# Names and numbers are ASCII: `str.isdigit` would accept "¹" and `str.isalpha` look-alikes.
_DIGITS = frozenset("0123456789")
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | _DIGITS
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def _is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o < 0xA0 or o in (0x2028, 0x2029)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        start = i
        if ch in _DIGITS:
            while i < n and text[i] in _DIGITS:
                i += 1
            is_float = False
            if i + 1 < n and text[i] == "." and text[i + 1] in _DIGITS:
                is_float = True
                i += 1
                while i < n and text[i] in _DIGITS:
                    i += 1
            if i < n and text[i] in _NAME_CHARS:
                raise SyntaxProblem(f"malformed number `{text[start : i + 1]}`", start, i + 1)
            raw = text[start:i]
            if len(raw) > 30:
                raise SyntaxProblem("number literal is too long", start, i, "too-long")
            tokens.append(Token("num", raw, start, i, float(raw) if is_float else int(raw)))
            continue
        if ch in _NAME_START:
            while i < n and text[i] in _NAME_CHARS:
                i += 1
            word = text[start:i]
            kind = "op" if word in KEYWORDS else "name"
            tokens.append(Token(kind, word, start, i))
            continue
        if ch in "\"'":
            quote = ch
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise SyntaxProblem("string is not closed; add the missing quote", start, n)
                c = text[i]
                if c == quote:
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise SyntaxProblem("string is not closed; add the missing quote", start, n)
                    esc = text[i + 1]
                    if esc not in _ESCAPES:
                        raise SyntaxProblem(f"unknown escape `\\{esc}` in string", i, i + 2)
                    c = _ESCAPES[esc]
                    if _is_control(c):
                        raise SyntaxProblem(
                            "control characters are not allowed in strings",
                            i,
                            i + 2,
                            "control-char",
                        )
                    buf.append(c)
                    i += 2
                    continue
                if _is_control(c):
                    raise SyntaxProblem(
                        f"control character U+{ord(c):04X} in a string; remove it",
                        i,
                        i + 1,
                        "control-char",
                    )
                buf.append(c)
                i += 1
            value = "".join(buf)
            tokens.append(Token("str", text[start:i], start, i, value))
            continue
        two = text[i : i + 2]
        if two in _TWO:
            tokens.append(Token("op", two, i, i + 2))
            i += 2
            continue
        if ch == "=":
            raise SyntaxProblem("`=` is not an operator; use `==` to compare", i, i + 1)
        if ch in _ONE:
            tokens.append(Token("op", ch, i, i + 1))
            i += 1
            continue
        if ch == "&" or ch == "|":
            word = "and" if ch == "&" else "or"
            raise SyntaxProblem(f"unexpected `{ch}`; write `{word}`", i, i + 1)
        if _is_control(ch):
            raise SyntaxProblem(
                f"control character U+{ord(ch):04X} in the expression", i, i + 1, "control-char"
            )
        raise SyntaxProblem(f"unexpected character `{ch}`", i, i + 1)
    tokens.append(Token("eof", "", n, n))
    return tokens
