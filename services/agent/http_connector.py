"""The agent's HTTP connector: a browser-like User-Agent, timeouts and retries.

Sites that refuse bare clients (HTTP 403 to ``python-httpx``) accept the
agent, because every request names it with a full User-Agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

logger = logging.getLogger(__name__)

USER_AGENT = (
    "Mozilla/5.0 (compatible; EuglenaAgent/0.1; +https://euglena.invalid/agent)"
)
RETRIED_STATUSES = frozenset({429, 502, 503, 504})


class RetriableStatusError(Exception):
    """The server answered with a status worth asking again."""


@dataclass(frozen=True)
class Page:
    """What a GET brought back, its text cut to a bounded length."""

    url: str
    status: int
    content_type: str
    text: str


class HttpConnector:
    """GETs pages for the agent, retrying transport faults and busy servers."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        max_chars: int = 20_000,
    ) -> None:
        self._client = httpx.Client(
            headers={"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.8"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=True,
        )
        self._attempts = attempts
        self._max_chars = max_chars

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._client.headers)

    def get(self, url: str) -> Page:
        """GET ``url``; raise ``httpx.HTTPError`` when it cannot be fetched."""
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.3, max=3),
            retry=retry_if_exception_type((httpx.TransportError, RetriableStatusError)),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        response = retrying(self._get_once, url)
        return Page(
            url=str(response.url),
            status=response.status_code,
            content_type=response.headers.get("content-type", ""),
            text=response.text[: self._max_chars],
        )

    def close(self) -> None:
        self._client.close()

    def _get_once(self, url: str) -> httpx.Response:
        logger.debug("GET %s", url)
        response = self._client.get(url)
        if response.status_code in RETRIED_STATUSES:
            raise RetriableStatusError(f"HTTP {response.status_code} from {url}")
        return response
