"""User-facing errors: one line saying what is wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it on one line and exits with code 2."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> UserError:
    """Error for a name that is not one of the allowed choices."""
    choices = sorted(str(c) for c in choices)
    return UserError(
        f"{what}: unknown value '{value}'.{did_you_mean(value, choices)} "
        f"Allowed: {', '.join(choices)}."
    )
