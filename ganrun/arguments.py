"""``key=value`` command lines of ganrun-sample and ganrun-eval (Hydra-style, no Hydra)."""
from __future__ import annotations

from ganrun.errors import ConfigError


def parse_key_values(argv: list[str], types: dict[str, type], defaults: dict, required: tuple[str, ...], usage: str) -> dict:
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
    threads = args.get("threads", "auto")
    if threads != "auto" and not (threads.isdigit() and int(threads) >= 1):
        raise ConfigError(f"threads={threads} is not valid; choose auto or a positive integer")
    if args.get("ema", "true") not in ("true", "false"):
        raise ConfigError(f"ema={args['ema']} is not valid; choose true or false")
    return args
