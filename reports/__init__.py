"""Comparison tables and plots made from finished MLflow runs.

Reads MLflow only: no import of ``suite.job.engine``, ``methods`` or ``tempme``.
"""
