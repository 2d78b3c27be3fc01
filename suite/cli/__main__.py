"""``python -m suite.cli``: the same command line as ``suite``."""

from suite.cli import main

main()
