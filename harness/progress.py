"""Progress lines a person can follow: each step, what it did, how long it took."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

logger = logging.getLogger("harness.progress")

StepWrapper = Callable[[str], AbstractContextManager[object]]


class Progress:
    """Times named steps and reports them to the log and an optional wrapper.

    The wrapper lets a caller see each step too; the pytest plugin makes every
    deploy step an Allure step through it.
    """

    def __init__(self, wrapper: StepWrapper | None = None) -> None:
        self._wrapper = wrapper
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        logger.info("%s ...", title)
        outer = self._wrapper(title) if self._wrapper else nullcontext()
        with outer:
            try:
                yield
            except BaseException:
                logger.error("%s failed after %.1fs", title, time.monotonic() - started)
                raise
        elapsed = time.monotonic() - started
        self.timings.append((title, elapsed))
        logger.info("%s done in %.1fs", title, elapsed)

    def note(self, message: str, *args: object) -> None:
        logger.info("  %s", message % args if args else message)
