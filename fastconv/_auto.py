"""How the `auto` backend picks a concrete backend for one call signature."""
from __future__ import annotations

from . import _registry


def choose(op: str, signature: tuple) -> str:
    """Backend name for ``op`` on ``signature`` (shapes, params, dtype).

    For now: the first available backend in registry order, skipping the slow reference.
    """
    names = [n for n in _registry.available_backends() if n != "naive"]
    return names[0] if names else "naive"
