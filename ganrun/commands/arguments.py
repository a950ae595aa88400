"""``key=value`` command lines of ganrun-sample and ganrun-eval (Hydra-style, no Hydra)."""

from __future__ import annotations

from ganrun.config.checks import SCHEMA
from ganrun.errors import ConfigError


def parse_key_values(
    argv: list[str], types: dict[str, type], defaults: dict, required: tuple[str, ...], usage: str
) -> dict:
    """``defaults`` updated with each ``key=value`` of ``argv``, converted by ``types``.

    One-line ConfigError for an unknown key, a value of the wrong type, or a missing required key."""
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ConfigError(f"unknown argument {item!r}; usage: {usage}")
        try:
            args[key] = types[key](value)
        except ValueError:
            raise ConfigError(f"{key}={value} is not valid; expected {types[key].__name__}") from None
    for key in required:
        if key not in args:
            raise ConfigError(f"missing {key}=...; usage: {usage}")
    if "threads" in args:  # the same rule as ganrun's own threads= key
        check, allowed = SCHEMA["threads"]
        value = args["threads"]
        if not check(int(value) if value.isdigit() else value):
            raise ConfigError(f"threads={value} is not valid; {allowed}")
    if args.get("ema", "true") not in ("true", "false"):
        raise ConfigError(f"ema={args['ema']} is not valid; choose true or false")
    return args
