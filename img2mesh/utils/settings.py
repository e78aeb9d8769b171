"""Settings objects (the internal dataclasses built from a resolved config) mark their fixed parts.

A settings class takes every configurable value from the config (its ``from_config``) and has no
default of its own for it; what it does hold a value for is part of the recipe, not configuration,
and says so with :func:`fixed` (the config guard test checks every field of every settings class).
"""

from __future__ import annotations

import dataclasses
from typing import Any


def fixed(value: Any, why: str) -> Any:
    """A settings field that is a fixed part of the recipe (``why`` names what it is)."""
    return dataclasses.field(default=value, metadata={"fixed": why})


def is_fixed(field: dataclasses.Field) -> bool:
    """Whether a settings field was declared with :func:`fixed`."""
    return "fixed" in field.metadata
