"""What the end-to-end tests share: the settings of a tiny synthetic run (a few seconds on a
CPU) and the JSON summary that ``suite run --json`` prints."""

import json

TINY_DATA = ["--set", "data.num_train=8", "--set", "data.num_val=4", "--set", "data.num_test=8",
             "--set", "train.eval_batch_size=8"]


def json_summary(stdout: str) -> dict:
    """The JSON document a ``--json`` command prints after its progress output."""
    return json.loads(stdout[stdout.index("{"):])
