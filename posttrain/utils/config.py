"""Config validation: a bad value stops the run with an error that names the key."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message starts with the dotted key."""


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_choice(value, choices, key: str) -> None:
    check(value in choices, key, f"must be one of {sorted(choices)}, got {value!r}")
