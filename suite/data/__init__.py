"""Datasets: cards (TOML in the top-level ``datasets/`` folder), loaders, frame sampling."""
