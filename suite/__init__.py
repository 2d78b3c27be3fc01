"""The suite: an application built in layers (docs/architecture.md)."""
