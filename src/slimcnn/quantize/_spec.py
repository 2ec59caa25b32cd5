"""Parsing of per-layer settings (``'conv1=9,conv*=8,fc*=1'``) and byte sizes (``4MB``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from slimcnn.errors import ConfigError

V = TypeVar("V", int, float)

LayerRules = tuple[tuple[str, float], ...]
"""Ordered ``(fnmatch pattern, value)`` pairs; the first pattern that matches a layer wins."""


def parse_layer_rules(
    text: str | Mapping[str, float] | int | float | None,
    *,
    option: str,
    cast: Callable[[str], float] = float,
    check: Callable[[float], bool] = lambda v: True,
    expect: str = "a number",
) -> LayerRules:
    """Parse ``'conv1=9,conv*=8,fc*=1'`` into ordered ``(pattern, value)`` rules.

    A bare value (``'8'`` or ``8``) means ``'*=8'``. Patterns are fnmatch patterns on module FQNs
    (``layer1.0.conv1``); the **first** matching rule wins, so put specific patterns first.

    Args:
        text: the option as written by the user, a mapping, a bare number or None (no rules).
        option: the CLI flag, for error messages (``--bits``).
        cast: converts one value string.
        check: validates one value.
        expect: human description of a valid value.

    Raises:
        ConfigError: on malformed entries or invalid values.
    """
    if text is None:
        return ()
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        items: Iterable[tuple[str, str]] = [("*", str(text))]
    elif isinstance(text, Mapping):
        items = [(str(k), str(v)) for k, v in text.items()]
    else:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        items = []
        for p in parts:
            if "=" in p:
                pat, _, val = p.rpartition("=")
                items.append((pat.strip(), val.strip()))
            else:
                items.append(("*", p))
    rules: list[tuple[str, float]] = []
    for pat, val in items:
        if not pat:
            raise ConfigError(f"{option}: empty layer pattern in {text!r}; write e.g. 'conv1=9,conv*=8'")
        try:
            v = cast(val)
        except ValueError:
            raise ConfigError(f"{option}: expected {expect} for '{pat}', got {val!r} (in {text!r})") from None
        if not check(v):
            raise ConfigError(f"{option}: expected {expect} for '{pat}', got {val!r}")
        rules.append((pat, v))
    return tuple(rules)


def match_rule(rules: LayerRules, name: str) -> float | None:
    """Value of the first rule whose pattern matches ``name``, else None."""
    for pat, v in rules:
        if fnmatch.fnmatchcase(name, pat):
            return v
    return None


def check_rules_used(rules: LayerRules, names: list[str], *, option: str) -> None:
    """Fail early when a pattern matches no layer (a typo would otherwise silently do nothing)."""
    for pat, _ in rules:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(
                f"{option}: pattern '{pat}' matches no conv/linear layer; layers are: {shown}. "
                "Patterns match full module names (use '*conv*' for nested layers)."
            )
