"""Counts in messages: "1 group", "2 groups", never "1 groups" or "group(s)"."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, the noun in the plural unless ``number`` is 1 (``plural`` when not noun+s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
