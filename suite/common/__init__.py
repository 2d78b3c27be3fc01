"""The bottom of the suite: atomic file writes, file locks, consoles, preflight checks of
places to write, the cache folder, and typed settings. Imports nothing above it."""
