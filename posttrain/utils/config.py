"""Config validation: a bad value stops the run with an error that names the key."""
from __future__ import annotations

from collections.abc import Iterable, Mapping


class ConfigError(ValueError):
    """A configuration value is wrong; the message starts with the dotted key."""


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_choice(value, choices, key: str) -> None:
    check(value in choices, key, f"must be one of {sorted(choices)}, got {value!r}")


def check_keys(options: Mapping | None, known: Iterable[str], key: str) -> dict:
    """`options` (None: empty) as a plain dict; a name outside `known` is an error naming its full key, e.g.
    `method.generation.top_kk: unknown key; known: [...]`, so a typo never silently falls back to a default."""
    options, known = dict(options or {}), sorted(known)
    for name in options:
        check(name in known, f"{key}.{name}", f"unknown key; known: {known}")
    return options


def with_defaults(options: Mapping | None, defaults: Mapping, key: str) -> dict:
    """`defaults` updated by `options`, whose every name must be one of the defaults' (`check_keys`)."""
    return {**defaults, **check_keys(options, defaults, key)}
