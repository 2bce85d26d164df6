"""CloudWatch's ingestion delay for moto: a datapoint is readable only after a while.

On AWS a value put with ``PutMetricData`` shows up in ``GetMetricData``,
``GetMetricStatistics`` and ``ListMetrics`` seconds after the put; moto
answers with it at once, so a consumer that assumes instant data would pass
here and fail on AWS. ``install()`` stamps each datapoint moto stores with the
time it was put and hides it from every read until ``ingestion_delay()``
seconds have passed since then (2 s by default; ``set_ingestion_delay(0)``
shows everything at once, as moto alone does).

Note: the delay is read at each read, so changing it also changes when
datapoints already stored become visible. These classes are moto's internals,
so ``tests/local/test_cloudwatch_completion.py`` pins the moto version and
fails when moto changes what is wrapped here.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from moto.cloudwatch.models import CloudWatchBackend, MetricDatumBase

from harness.errors import DeployError

logger = logging.getLogger(__name__)

DEFAULT_INGESTION_DELAY = 2.0
# What the wrappers expect of moto's methods; any change fails install() loudly.
WRAPPED = {
    "put_metric_data": ["self", "namespace", "metric_data"],
    "get_all_metrics": ["self"],
}

_MARKER = "__euglena_completion__"
_PUT_AT = "euglena_put_at"
_originals: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()
_put_lock = threading.Lock()
_delay = DEFAULT_INGESTION_DELAY


def set_ingestion_delay(seconds: float) -> None:
    """Make datapoints readable ``seconds`` after their put; 0 disables the delay."""
    global _delay
    if not seconds >= 0:
        raise ValueError(
            f"ingestion delay must be 0 or more seconds, got {seconds!r}: use 0 to "
            "read datapoints at once, or e.g. 2 for a delay like AWS's"
        )
    _delay = float(seconds)
    logger.info("CloudWatch ingestion delay set to %s s", seconds)


def ingestion_delay() -> float:
    """Seconds between a datapoint's put and its first appearance in a read."""
    return _delay


def install() -> None:
    """Add the ingestion delay to moto's CloudWatch; calling it again does nothing."""
    wrappers = {"put_metric_data": _put_metric_data, "get_all_metrics": _get_all}
    with _lock:
        for name, wrapper in wrappers.items():
            current = getattr(CloudWatchBackend, name, None)
            if getattr(current, _MARKER, False):
                continue
            _check(name, current)
            assert current is not None
            _originals[name] = current
            setattr(wrapper, _MARKER, True)
            setattr(CloudWatchBackend, name, wrapper)
    logger.debug("moto CloudWatch completed with an ingestion delay")


def uninstall() -> None:
    """Give moto's CloudWatch back its own methods (datapoints show at once)."""
    with _lock:
        for name, original in _originals.items():
            setattr(CloudWatchBackend, name, original)
        _originals.clear()


def is_installed() -> bool:
    """Whether ``install()`` has completed moto's CloudWatch in this process."""
    return all(
        getattr(getattr(CloudWatchBackend, name, None), _MARKER, False)
        for name in WRAPPED
    )


def _check(name: str, method: Callable[..., Any] | None) -> None:
    parameters = None if method is None else list(inspect.signature(method).parameters)
    if parameters != WRAPPED[name]:
        raise DeployError(
            f"moto's CloudWatchBackend.{name} now takes {parameters}, not "
            f"{WRAPPED[name]}: adapt harness/local/cloudwatch_completion.py to it, "
            "or keep moto at the version requirements.txt pins",
            resource=f"moto.cloudwatch.models.CloudWatchBackend.{name}",
        )


def _put_metric_data(
    backend: CloudWatchBackend, namespace: str, metric_data: list[dict[str, Any]]
) -> None:
    # moto only appends, so what this put stored is what follows ``before``.
    with _put_lock:
        put_at = time.monotonic()
        before = len(backend.metric_data)
        _originals["put_metric_data"](backend, namespace, metric_data)
        for datum in backend.metric_data[before:]:
            setattr(datum, _PUT_AT, put_at)


def _get_all(backend: CloudWatchBackend) -> list[MetricDatumBase]:
    # Every read (GetMetricData, GetMetricStatistics, ListMetrics) starts here.
    every: list[MetricDatumBase] = _originals["get_all_metrics"](backend)
    if _delay <= 0:
        return every
    ingested_before = time.monotonic() - _delay
    return [d for d in every if getattr(d, _PUT_AT, ingested_before) <= ingested_before]
