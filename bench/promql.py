"""The part of PromQL that the Grafana dashboard (deploy/grafana/dashboards) uses, evaluated over
scrapes kept in memory: enough to draw the dashboard's panels from the same queries where
Prometheus and Grafana cannot run (``bench/dashboard.py``).

Supported: ``sum``/``max``/``min`` with an optional ``by (labels)``; ``rate(m{…}[W])``;
``histogram_quantile(q, …)``; selectors with ``=`` and ``!=`` matchers. Anything else is a
:class:`QueryError`, so a dashboard query outside this subset fails the test that parses them all
(tests/test_deploy_ops.py) instead of being drawn wrongly.

As in Prometheus, ``rate`` is the per-second increase over the window, counter resets included;
unlike Prometheus, it does not extrapolate to the window's edges (a small difference at the
start and end of a series, none in between).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<string>\"[^\"]*\")"
    r"|(?P<range>\[\d+[smh]\])|(?P<op>!=|=|[(){},]))"
)
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"sum": sum, "max": max, "min": min}
STALE_S = 300.0


class QueryError(ValueError):
    """A query outside the supported subset."""


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]]

    def matches(self, name: str, labels: Labels) -> bool:
        if name != self.metric:
            return False
        have = dict(labels)
        return all(
            (have.get(label, "") == value) == (op == "=") for label, op, value in self.matchers
        )


@dataclass
class Rate:
    selector: Selector
    window_s: float


@dataclass
class Aggregate:
    op: str
    by: list[str] | None
    inner: Any


@dataclass
class Quantile:
    q: float
    inner: Any


@dataclass
class Series:
    """Every scrape: its time and its samples by (metric name, labels)."""

    scrapes: list[tuple[float, dict[tuple[str, Labels], float]]] = field(default_factory=list)

    def add(self, at: float, samples: dict[tuple[str, Labels], float]) -> None:
        self.scrapes.append((at, samples))

    def metric_names(self) -> set[str]:
        return {name for _, samples in self.scrapes for name, _ in samples}


def parse(query: str) -> Any:
    tokens = _tokens(query)
    node, pos = _expr(tokens, 0)
    if pos != len(tokens):
        raise QueryError(f"unexpected {tokens[pos][1]!r} in {query!r}")
    return node


def selectors(node: Any) -> list[Selector]:
    """The metric selectors of a parsed query."""
    if isinstance(node, Selector):
        return [node]
    if isinstance(node, Rate):
        return [node.selector]
    return selectors(node.inner)


def _tokens(query: str) -> list[tuple[str, str]]:
    found, pos = [], 0
    while pos < len(query.rstrip()):
        match = _TOKEN.match(query, pos)
        if not match or match.end() == pos:
            raise QueryError(f"cannot read {query[pos:]!r}")
        kind = match.lastgroup or ""
        found.append((kind, match[kind]))
        pos = match.end()
    return found


def _expect(tokens: list[tuple[str, str]], pos: int, text: str) -> int:
    if pos >= len(tokens) or tokens[pos][1] != text:
        raise QueryError(f"expected {text!r}")
    return pos + 1


def _expr(tokens: list[tuple[str, str]], pos: int) -> tuple[Any, int]:
    kind, text = tokens[pos]
    if kind != "name":
        raise QueryError(f"unexpected {text!r}")
    if text in AGGREGATIONS:
        pos += 1
        by = None
        if tokens[pos][1] == "by":
            by, pos = _label_list(tokens, pos + 1)
        pos = _expect(tokens, pos, "(")
        inner, pos = _expr(tokens, pos)
        return Aggregate(text, by, inner), _expect(tokens, pos, ")")
    if text == "rate":
        pos = _expect(tokens, pos + 1, "(")
        selector, pos = _selector(tokens, pos)
        if pos >= len(tokens) or tokens[pos][0] != "range":
            raise QueryError("rate() needs a range [W]")
        window = tokens[pos][1][1:-1]
        seconds = float(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]
        return Rate(selector, seconds), _expect(tokens, pos + 1, ")")
    if text == "histogram_quantile":
        pos = _expect(tokens, pos + 1, "(")
        if tokens[pos][0] != "number":
            raise QueryError("histogram_quantile needs a number first")
        q = float(tokens[pos][1])
        pos = _expect(tokens, pos + 1, ",")
        inner, pos = _expr(tokens, pos)
        return Quantile(q, inner), _expect(tokens, pos, ")")
    return _selector(tokens, pos)


def _label_list(tokens: list[tuple[str, str]], pos: int) -> tuple[list[str], int]:
    pos = _expect(tokens, pos, "(")
    labels = []
    while tokens[pos][1] != ")":
        labels.append(tokens[pos][1])
        pos += 1
        if tokens[pos][1] == ",":
            pos += 1
    return labels, pos + 1


def _selector(tokens: list[tuple[str, str]], pos: int) -> tuple[Selector, int]:
    kind, name = tokens[pos]
    if kind != "name":
        raise QueryError(f"expected a metric name, got {name!r}")
    pos += 1
    matchers = []
    if pos < len(tokens) and tokens[pos][1] == "{":
        pos += 1
        while tokens[pos][1] != "}":
            label, op, value = tokens[pos][1], tokens[pos + 1][1], tokens[pos + 2]
            if op not in ("=", "!=") or value[0] != "string":
                raise QueryError(f"unsupported matcher near {label!r}")
            matchers.append((label, op, value[1][1:-1]))
            pos += 3
            if tokens[pos][1] == ",":
                pos += 1
        pos += 1
    return Selector(name, matchers), pos


def evaluate(node: Any, series: Series, at: float) -> Vector:
    """The query's value at time ``at`` (one of the scrapes' times or later)."""
    if isinstance(node, Selector):
        return _instant(node, series, at)
    if isinstance(node, Rate):
        return _rate(node, series, at)
    if isinstance(node, Aggregate):
        groups: dict[Labels, list[float]] = defaultdict(list)
        for labels, value in evaluate(node.inner, series, at).items():
            kept = tuple((k, v) for k, v in labels if node.by is not None and k in node.by)
            groups[kept].append(value)
        return {labels: AGGREGATIONS[node.op](values) for labels, values in groups.items()}
    if isinstance(node, Quantile):
        return _quantile(node.q, evaluate(node.inner, series, at))
    raise QueryError(f"cannot evaluate {node!r}")


def _instant(selector: Selector, series: Series, at: float) -> Vector:
    for when, samples in reversed(series.scrapes):
        if when <= at:
            if at - when > STALE_S:
                return {}
            return {
                labels: value
                for (name, labels), value in samples.items()
                if selector.matches(name, labels)
            }
    return {}


def _rate(node: Rate, series: Series, at: float) -> Vector:
    points: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for when, samples in series.scrapes:
        if at - node.window_s < when <= at:
            for (name, labels), value in samples.items():
                if node.selector.matches(name, labels):
                    points[labels].append((when, value))
    rates: Vector = {}
    for labels, seen in points.items():
        if len(seen) < 2:
            continue
        increase = 0.0
        for (_, before), (_, after) in pairwise(seen):
            increase += after - before if after >= before else after  # a reset starts from 0
        rates[labels] = increase / (seen[-1][0] - seen[0][0])
    return rates


def _quantile(q: float, buckets: Vector) -> Vector:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket."""
    groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, value in buckets.items():
        rest = tuple((k, v) for k, v in labels if k != "le")
        le = dict(labels).get("le")
        if le is not None:
            groups[rest].append((math.inf if le == "+Inf" else float(le), value))
    result: Vector = {}
    for labels, points in groups.items():
        points.sort()
        total = points[-1][1] if points else 0.0
        if total <= 0:
            continue
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in points:
            if count >= rank:
                if math.isinf(bound):
                    result[labels] = lower_bound
                else:
                    width = count - lower_count
                    share = (rank - lower_count) / width if width else 1.0
                    result[labels] = lower_bound + (bound - lower_bound) * share
                break
            lower_bound, lower_count = bound, count
    return result
