"""Reading service settings from the environment, with errors that say the fix."""

from __future__ import annotations

import os
from collections.abc import Mapping


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and the fix."""


def environment(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    """Return ``environ``, or the process environment when it is None."""
    return os.environ if environ is None else environ


def required(environ: Mapping[str, str], name: str, hint: str) -> str:
    """Return the non-empty value of ``name``, or raise with ``hint`` as the fix."""
    value = environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: {hint}")
    return value


def optional(environ: Mapping[str, str], name: str, default: str = "") -> str:
    """Return the value of ``name`` stripped, or ``default`` when unset or blank."""
    return environ.get(name, "").strip() or default


def integer(
    environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0
) -> int:
    """Return ``name`` as an integer of at least ``minimum``, or ``default``."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not an integer: set a whole number"
        ) from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below {minimum}: raise it")
    return value


def number(
    environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0
) -> float:
    """Return ``name`` as a float of at least ``minimum``, or ``default``."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number: set e.g. 2.5") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below {minimum}: raise it")
    return value
