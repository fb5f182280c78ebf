"""User-facing errors: one line saying what is wrong and what to do."""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it on one line and exits with code 2."""


class TrainingStopped(Exception):
    """Training ended early on purpose; the run directory is consistent and can be resumed or inspected."""


class Interrupted(TrainingStopped):
    """A signal stopped training after a checkpoint of the current step; rerunning resumes.
    The CLI exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int, step: int):
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; a checkpoint of this step "
            "is saved: run the same command again to resume"
        )
        self.signum, self.step = signum, step


class SweepStopped(TrainingStopped):
    """A signal stopped a sweep launcher; its running runs checkpointed. Exit 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(
            f"sweep stopped by {signal.Signals(signum).name}; the runs in progress saved a checkpoint: "
            "run the same command again to resume them"
        )
        self.signum = signum


class Diverged(TrainingStopped):
    """The training loss or the parameters stopped being finite; nothing non-finite was saved (exit 3)."""

    def __init__(self, step: int, what: str, last_good: int | None):
        kept = f"the last good checkpoint (step {last_good}) is intact" if last_good else "no checkpoint was saved"
        super().__init__(
            f"training diverged by step {step}: {what} is not finite; {kept}. "
            "Lower optimizer.lr, or set optimizer.grad_clip_norm."
        )
        self.step = step


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> UserError:
    """Error for a name that is not one of the allowed choices."""
    choices = sorted(str(c) for c in choices)
    return UserError(f"{what}: unknown value '{value}'.{did_you_mean(value, choices)} Allowed: {', '.join(choices)}.")


def problem_list(groups: Iterable[tuple[str, list[str]]], shown: int = 4) -> list[str]:
    """'label (n): a, b, c, d, ... and k more' for each (label, items) group that has items: the parts of a
    one-line error naming what differs (missing keys, unexpected keys, shapes)."""
    return [
        f"{label} ({len(items)}): {', '.join(items[:shown])}"
        + (f", ... and {len(items) - shown} more" if len(items) > shown else "")
        for label, items in groups
        if items
    ]
