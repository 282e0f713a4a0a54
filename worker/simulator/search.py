"""The subset of EnOS's search expression language the simulator understands.

``deviceKey in ('a','b')``, ``assetId in (…)``, ``productKey = 'pk'`` (and ``=``/``in`` on each of
the three), joined by ``and``/``or`` with parentheses; ``and`` binds tighter than ``or``. An
expression evaluates to a set of assetIds, using the store's indexes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from worker.simulator.state import Org

FIELDS = ("deviceKey", "assetId", "productKey")
_TOKEN = re.compile(r"\s*(?:(\()|(\))|(,)|(=)|'((?:[^'\\]|\\.)*)'|([A-Za-z_][A-Za-z0-9_.]*))")

Matcher = Callable[[Org], set[str]]


class ExpressionError(ValueError):
    """The expression cannot be parsed."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError(f"unexpected text at position {pos}: {text[pos : pos + 20]!r}")
        pos = match.end()
        lparen, rparen, comma, equals, string, word = match.groups()
        if lparen:
            out.append(("(", "("))
        elif rparen:
            out.append((")", ")"))
        elif comma:
            out.append((",", ","))
        elif equals:
            out.append(("=", "="))
        elif string is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", string)))
        else:
            lowered = word.lower()
            out.append((lowered if lowered in ("and", "or", "in") else "name", word))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            found = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "end of expression"
            raise ExpressionError(f"expected {kind!r}, found {found!r}")
        value = self.tokens[self.pos][1]
        self.pos += 1
        return value

    def parse(self) -> Matcher:
        matcher = self.disjunction()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.tokens[self.pos][1]!r}")
        return matcher

    def disjunction(self) -> Matcher:
        parts = [self.conjunction()]
        while self.peek() == "or":
            self.take("or")
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda org: set().union(*(part(org) for part in parts))

    def conjunction(self) -> Matcher:
        parts = [self.factor()]
        while self.peek() == "and":
            self.take("and")
            parts.append(self.factor())
        if len(parts) == 1:
            return parts[0]
        return lambda org: set.intersection(*(part(org) for part in parts))

    def factor(self) -> Matcher:
        if self.peek() == "(":
            self.take("(")
            inner = self.disjunction()
            self.take(")")
            return inner
        name = self.take("name")
        if name not in FIELDS:
            raise ExpressionError(f"field {name!r} is not searchable here; use {', '.join(FIELDS)}")
        if self.peek() == "=":
            self.take("=")
            values = {self.take("str")}
        else:
            self.take("in")
            self.take("(")
            values = {self.take("str")}
            while self.peek() == ",":
                self.take(",")
                values.add(self.take("str"))
            self.take(")")
        return _leaf(name, values)


def _leaf(name: str, values: set[str]) -> Matcher:
    if name == "deviceKey":
        return lambda org: {org.by_key[k].asset_id for k in values if k in org.by_key}
    if name == "assetId":
        return lambda org: {a for a in values if a in org.by_asset}
    return lambda org: {d.asset_id for d in org.by_key.values() if d.product_key in values}


def compile_expression(text: object) -> Matcher:
    if not isinstance(text, str):
        # It comes straight from a JSON body: a number or an object is the caller's mistake.
        raise ExpressionError(f"must be a string, got {type(text).__name__}")
    return _Parser(text).parse()
