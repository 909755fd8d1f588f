"""Recursive-descent (precedence-climbing) parser for expressions.

Precedence, loosest first: ``or`` < ``and`` < ``not`` < comparisons (``== != < <= > >= in``,
``not in``; not chainable) < ``+ -`` < ``* / %`` < unary ``-`` < postfix (``.name``, ``[index]``,
``.method(args)``) < atoms.
"""

from __future__ import annotations

from rules import ast
from rules.lexer import SyntaxProblem, Token, tokenize

MAX_LENGTH = 2000
MAX_DEPTH = 32
MAX_TREE_DEPTH = 64

_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">="})


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.tok
        return tok.kind == "op" and tok.text == text

    def expect(self, text: str, what: str) -> Token:
        if not self.at(text):
            tok = self.tok
            found = "the end of the expression" if tok.kind == "eof" else f"`{tok.text}`"
            raise SyntaxProblem(
                f"expected {what}, found {found}", tok.start, max(tok.end, tok.start + 1)
            )
        return self.advance()

    def enter(self, start: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SyntaxProblem(
                f"expression is nested more than {MAX_DEPTH} levels deep; split it into segments",
                start,
                start + 1,
                "too-deep",
            )

    def parse(self) -> ast.Node:
        if self.tok.kind == "eof":
            raise SyntaxProblem("empty expression", 0, 1)
        node = self.parse_or()
        if self.tok.kind != "eof":
            tok = self.tok
            hint = ""
            if tok.kind in ("name", "str", "num"):
                hint = " (a missing `and`/`or` or operator?)"
            raise SyntaxProblem(f"unexpected `{tok.text}`{hint}", tok.start, tok.end)
        return node

    def parse_or(self) -> ast.Node:
        left = self.parse_and()
        while self.at("or"):
            self.advance()
            right = self.parse_and()
            left = ast.Binary(left.start, right.end, "or", left, right)
        return left

    def parse_and(self) -> ast.Node:
        left = self.parse_not()
        while self.at("and"):
            self.advance()
            right = self.parse_not()
            left = ast.Binary(left.start, right.end, "and", left, right)
        return left

    def parse_not(self) -> ast.Node:
        if self.at("not"):
            tok = self.advance()
            self.enter(tok.start)
            operand = self.parse_not()
            self.depth -= 1
            return ast.Unary(tok.start, operand.end, "not", operand)
        return self.parse_compare()

    def parse_compare(self) -> ast.Node:
        left = self.parse_additive()
        op: str | None = None
        if self.tok.kind == "op" and self.tok.text in _COMPARE:
            op = self.advance().text
        elif self.at("in"):
            self.advance()
            op = "in"
        elif self.at("not") and self.tokens[self.pos + 1].text == "in":
            self.advance()
            self.advance()
            op = "not in"
        if op is None:
            return left
        right = self.parse_additive()
        node = ast.Binary(left.start, right.end, op, left, right)
        tok = self.tok
        if tok.kind == "op" and (tok.text in _COMPARE or tok.text == "in"):
            raise SyntaxProblem(
                "comparisons cannot be chained; join them with `and`", tok.start, tok.end
            )
        return node

    def parse_additive(self) -> ast.Node:
        left = self.parse_mul()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.advance().text
            right = self.parse_mul()
            left = ast.Binary(left.start, right.end, op, left, right)
        return left

    def parse_mul(self) -> ast.Node:
        left = self.parse_unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "%"):
            op = self.advance().text
            right = self.parse_unary()
            left = ast.Binary(left.start, right.end, op, left, right)
        return left

    def parse_unary(self) -> ast.Node:
        if self.at("-"):
            tok = self.advance()
            self.enter(tok.start)
            operand = self.parse_unary()
            self.depth -= 1
            return ast.Unary(tok.start, operand.end, "-", operand)
        return self.parse_postfix()

    def parse_postfix(self) -> ast.Node:
        node = self.parse_atom()
        while True:
            if self.at("."):
                self.advance()
                tok = self.tok
                if tok.kind != "name" and not (tok.kind == "op" and tok.text.isalpha()):
                    raise SyntaxProblem(
                        "expected a name after `.`", tok.start, max(tok.end, tok.start + 1)
                    )
                self.advance()
                if self.at("("):
                    args, end = self.parse_args()
                    node = ast.Call(node.start, end, tok.text, args, node, tok.start)
                else:
                    node = ast.Attr(node.start, tok.end, node, tok.text, tok.start)
            elif self.at("["):
                self.advance()
                self.enter(node.start)
                index = self.parse_or()
                self.depth -= 1
                close = self.expect("]", "`]`")
                node = ast.Index(node.start, close.end, node, index)
            else:
                return node

    def parse_args(self) -> tuple[list[ast.Node], int]:
        self.expect("(", "`(`")
        self.enter(self.tok.start)
        args: list[ast.Node] = []
        if not self.at(")"):
            args.append(self.parse_or())
            while self.at(","):
                self.advance()
                args.append(self.parse_or())
        close = self.expect(")", "`)` or `,`")
        self.depth -= 1
        return args, close.end

    def parse_atom(self) -> ast.Node:
        tok = self.tok
        if tok.kind == "num" or tok.kind == "str":
            self.advance()
            return ast.Literal(tok.start, tok.end, tok.value)
        if tok.kind == "op" and tok.text in ("true", "false", "null"):
            self.advance()
            value = {"true": True, "false": False, "null": None}[tok.text]
            return ast.Literal(tok.start, tok.end, value)
        if tok.kind == "name":
            self.advance()
            if self.at("("):
                args, end = self.parse_args()
                return ast.Call(tok.start, end, tok.text, args, None, tok.start)
            return ast.Name(tok.start, tok.end, tok.text)
        if self.at("("):
            self.advance()
            self.enter(tok.start)
            inner = self.parse_or()
            self.depth -= 1
            close = self.expect(")", "`)`")
            inner.start, inner.end = tok.start, close.end
            return inner
        if self.at("["):
            self.advance()
            self.enter(tok.start)
            items: list[ast.Node] = []
            if not self.at("]"):
                items.append(self.parse_or())
                while self.at(","):
                    self.advance()
                    if self.at("]"):
                        break
                    items.append(self.parse_or())
            close = self.expect("]", "`]` or `,`")
            self.depth -= 1
            return ast.ListLit(tok.start, close.end, items)
        if tok.kind == "eof":
            raise SyntaxProblem("the expression ends too early", tok.start, tok.start + 1)
        raise SyntaxProblem(f"unexpected `{tok.text}`", tok.start, tok.end)


def parse(text: str) -> ast.Node:
    """Parse one expression; raises SyntaxProblem (with offsets) for any malformed input."""
    if len(text) > MAX_LENGTH:
        raise SyntaxProblem(
            f"expression is {len(text)} characters long; the limit is {MAX_LENGTH} — "
            "move parts into named segments",
            0,
            1,
            "too-long",
        )
    node = _Parser(text).parse()
    # Long flat chains (`a or b or c …`) nest on one side; the compiler and checker recurse, so the
    # depth of the tree itself is bounded, not only the bracket nesting.
    depth = _tree_depth(node)
    if depth > MAX_TREE_DEPTH:
        raise SyntaxProblem(
            f"expression has {depth} nested operations; the limit is {MAX_TREE_DEPTH} — "
            "use `in [...]` for long lists of alternatives or split it into segments",
            node.start,
            node.end,
            "too-deep",
        )
    return node


def _tree_depth(node: ast.Node) -> int:
    best = 0
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in ast.children(n))
    return best
