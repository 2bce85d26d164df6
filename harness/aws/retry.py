"""Retrying AWS calls through eventual consistency, and only through it.

AWS answers some calls with an error that goes away by itself: throttling, a
role that IAM has created but not yet propagated, a security group still held
by a network interface being deleted. Those are retried with backoff; every
other error is raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from botocore.exceptions import ClientError, EndpointConnectionError
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
    }
)
# Messages that mean "not propagated yet" rather than "wrong".
PROPAGATION_HINTS = (
    "unable to assume the role",
    "role defined for the function cannot be assumed",
    "does not have permission to perform",
)


def error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(error: BaseException, also: Iterable[str] = ()) -> bool:
    """Whether ``error`` is one that AWS clears by itself."""
    if isinstance(error, EndpointConnectionError):
        return True
    code = error_code(error)
    if code in THROTTLING or code in set(also):
        return True
    message = str(error).lower()
    return code == "InvalidParameterException" and any(
        hint in message for hint in PROPAGATION_HINTS
    )


def eventually(
    call: Callable[[], T],
    *,
    also: Iterable[str] = (),
    timeout: float = 120.0,
) -> T:
    """Run ``call``, retrying transient AWS errors (and ``also``) until ``timeout``."""
    extra = frozenset(also)
    retrying = Retrying(
        retry=retry_if_exception(lambda error: is_transient(error, extra)),
        stop=stop_after_delay(timeout),
        wait=wait_exponential_jitter(multiplier=0.5, max=10),
        before_sleep=before_sleep_log(logger, logging.WARNING),
        reraise=True,
    )
    return retrying(call)
