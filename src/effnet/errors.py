"""Errors a user can cause. The CLI prints them in one line and exits non-zero."""


class EffnetError(ValueError):
    """A user-caused error whose message says how to fix it."""
