"""Comparison and plan tables, plots and the HTML page, made from finished MLflow runs.

Reads MLflow only. Importing it loads no engine, method or TempMe code: a plan's spec
(``reports.plan_spec``) and the default of a method option (``reports.settings``) import them
when they are asked for.
"""
