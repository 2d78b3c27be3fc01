"""Errors a report user can cause (unknown experiment, no finished runs, bad format)."""


class ReportError(ValueError):
    """What is wrong and what is valid, in one line."""
