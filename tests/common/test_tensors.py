"""The one safe loader of tensor files: data only, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
says, and one-line errors."""

import io
import os
from pathlib import Path

import pytest
import torch

from suite.common.tensors import FORCE_UNSAFE, load_tensors
from suite.errors import UserError


class Payload:
    """A pickle that creates a file when a plain ``torch.load`` unpickles it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("also_forced_safe", [False, True])
def test_a_planted_file_runs_nothing_even_under_the_variable(tmp_path, monkeypatch,
                                                              also_forced_safe):
    monkeypatch.setenv(FORCE_UNSAFE, "1")
    if also_forced_safe:  # torch itself raises when both are set; the loader does not care
        monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "planted.pt"
    path.write_bytes(saved({"w": torch.ones(2), "x": Payload(marker)}))
    for source in (path, path.read_bytes()):
        with pytest.raises(UserError) as info:
            load_tensors(source, f"{path.name} is unreadable")
        message = str(info.value)
        assert "\n" not in message and message.startswith("planted.pt is unreadable: it holds "
                                                           "more than tensors")
        assert "refused, nothing in it was run" in message and "weights_only" not in message
        assert not marker.exists()
        assert os.environ[FORCE_UNSAFE] == "1"  # put back after the call
    loaded = load_tensors(saved({"w": torch.ones(2), "n": 3}), "x")
    assert loaded["n"] == 3 and torch.equal(loaded["w"], torch.ones(2))


@pytest.mark.parametrize(("data", "why"), [
    (b"\0" * 64, "the unpickler met: Unsupported operand 0"),
    (saved({"w": torch.ones(2)})[:100], "PytorchStreamReader failed reading zip archive"),
    (b"hello", "not a file of tensors torch.save wrote"),
])
def test_damaged_or_foreign_files_are_one_line(data, why):
    with pytest.raises(UserError) as info:
        load_tensors(data, "x.pt is unreadable")
    message = str(info.value)
    assert "\n" not in message and message.startswith("x.pt is unreadable: not a file of "
                                                       "tensors torch.save wrote")
    assert why in message and "weights_only" not in message
