"""Metrics that a source plugin defines for itself (``context.metrics``).

A source asks its context for a counter or gauge by a short name; the core creates the
Prometheus family ``tstoraged_<name>`` once (shared by every source that asks for it, the
first label always being ``source``) and hands back a family bound to the asking source::

    received = context.metrics.counter("mqtt_messages_received", "MQTT messages received.")
    received.labels().inc()
    device_up = context.metrics.gauge("modbus_device_up", "1 while a device answers.", ["device"])
    device_up.labels(device="meter-1").set(1)

Label children are cached, so ``labels(...)`` in a hot path costs one dictionary lookup.
When a reload removes the source, its series disappear from ``/metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = [
    "CounterValue",
    "GaugeValue",
    "MetricFamily",
    "NullSourceMetrics",
    "PluginMetricFamilies",
    "SourceMetrics",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,79}$")
_RESERVED_LABELS = frozenset({"source"})


class CounterValue(Protocol):
    """One counter series."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (>= 0)."""


class GaugeValue(Protocol):
    """One gauge series."""

    def set(self, value: float) -> None:
        """Set the value."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount``."""


V = TypeVar("V", covariant=True)


class MetricFamily(Generic[V]):
    """A metric family bound to one source; :meth:`labels` gives one series."""

    __slots__ = ("_children", "_family", "_labelnames", "_source")

    def __init__(self, family: Counter | Gauge, source: str, labelnames: tuple[str, ...]) -> None:
        self._family = family
        self._source = source
        self._labelnames = labelnames
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, **values: str) -> V:
        """The series of this source with the given label values (every label must be given)."""
        try:
            key = tuple(str(values[name]) for name in self._labelnames) if values else ()
        except KeyError:
            key = None
        child = self._children.get(key) if key is not None else None
        if child is None:
            if key is None or set(values) != set(self._labelnames):
                raise ValueError(
                    f"labels {sorted(values)} do not match the metric's {list(self._labelnames)}"
                )
            child = self._children[key] = self._family.labels(self._source, *key)
        return cast("V", child)

    def remove_all(self) -> None:
        """Remove every series of this source from the family."""
        for key in self._children:
            self._family.remove(self._source, *key)
        self._children.clear()


class SourceMetrics(Protocol):
    """What ``context.metrics`` offers a source."""

    def counter(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> MetricFamily[CounterValue]:
        """The counter ``tstoraged_<name>_total`` of this source (created on first use)."""

    def gauge(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> MetricFamily[GaugeValue]:
        """The gauge ``tstoraged_<name>`` of this source (created on first use)."""


class PluginMetricFamilies:
    """The families plugins defined, in one registry; hands out per-source views."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._families: dict[str, tuple[str, str, tuple[str, ...], Counter | Gauge]] = {}
        self._bound: dict[tuple[str, str], MetricFamily[Any]] = {}

    def for_source(self, source: str) -> _BoundSourceMetrics:
        """The :class:`SourceMetrics` of ``source``."""
        return _BoundSourceMetrics(self, source)

    def family(
        self, kind: str, name: str, documentation: str, labelnames: Sequence[str], source: str
    ) -> MetricFamily[Any]:
        """Get or create family ``name`` and bind it to ``source``."""
        bound = self._bound.get((name, source))
        labels = tuple(labelnames)
        if bound is not None and bound._labelnames == labels:
            return bound
        if not _NAME.match(name):
            raise ValueError(
                f"metric name {name!r}: use lower-case letters, digits and '_' "
                "(it becomes tstoraged_<name>)"
            )
        if _RESERVED_LABELS & set(labels):
            raise ValueError(f"metric {name!r}: the label 'source' is added by the core")
        existing = self._families.get(name)
        if existing is None:
            full = f"tstoraged_{name}"
            cls = Counter if kind == "counter" else Gauge
            family = cls(full, documentation, ["source", *labels], registry=self._registry)
            self._families[name] = (kind, documentation, labels, family)
        else:
            known_kind, _, known_labels, family = existing
            if (known_kind, known_labels) != (kind, labels):
                raise ValueError(
                    f"metric {name!r} is already a {known_kind} with labels {list(known_labels)}"
                )
        view: MetricFamily[Any] = MetricFamily(family, source, labels)
        self._bound[(name, source)] = view
        return view

    def remove_source(self, source: str) -> None:
        """Drop every series of ``source`` (it was removed by a reload)."""
        for key in [key for key in self._bound if key[1] == source]:
            self._bound.pop(key).remove_all()


class _BoundSourceMetrics:
    """:class:`SourceMetrics` for one source."""

    __slots__ = ("_families", "_source")

    def __init__(self, families: PluginMetricFamilies, source: str) -> None:
        self._families = families
        self._source = source

    def counter(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> MetricFamily[CounterValue]:
        return self._families.family("counter", name, documentation, labelnames, self._source)

    def gauge(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> MetricFamily[GaugeValue]:
        return self._families.family("gauge", name, documentation, labelnames, self._source)


class NullSourceMetrics:
    """Metrics that go nowhere, for contexts without a registry."""

    def __init__(self) -> None:
        self._families = PluginMetricFamilies(CollectorRegistry())

    def counter(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> MetricFamily[CounterValue]:
        return self._families.for_source("-").counter(name, documentation, labelnames)

    def gauge(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> MetricFamily[GaugeValue]:
        return self._families.for_source("-").gauge(name, documentation, labelnames)
