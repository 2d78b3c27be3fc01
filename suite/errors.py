"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: what is wrong and what is valid, in one line."""
