"""The one parser of a comma-separated rare class list, shared by ``rareseg infer`` and the web API."""

from __future__ import annotations


def split_class_list(text: str, field: str) -> list[str]:
    """Names (or ids) of a comma-separated class list such as ``"water, wetland"``, blanks dropped.

    An empty list is an error, never "all classes": leaving the option out is the way to ask for all.

    Args:
        text: the list as typed.
        field: the option or field name used in the message (``--rare-classes``, ``rare_classes``).

    Returns:
        The stripped, non-empty items in the order given.

    Raises:
        ValueError: ``"<field>: give at least one rare class name, got '<text>'"`` for an empty list.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"{field}: give at least one rare class name, got {text!r}")
    return names
