"""The help formatter of rareseg's argparse subcommands."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says its default or there is none.

    An option whose default is None or False (a flag) has no value worth printing; a help text that
    explains its default in words (``default: the checkpoint's thresholds``) keeps just that.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)
