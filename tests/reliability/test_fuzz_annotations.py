"""Fuzzing the annotation files of the real datasets (each in its real format, as
tests/video_fixtures.py writes them): one file of a dataset is damaged (text inserted at any
place, bytes overwritten, the file cut short, emptied, re-encoded, or its captions replaced by
hostile text: a megabyte, NUL bytes, quotes, line breaks), then every annotation part is read.
Each read gives the annotations or one line naming the file; never a traceback."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import pytest
from fuzzing import POSITION, fast_and_long
from hypothesis import event
from hypothesis import strategies as st
from video_fixtures import make_dataset

from suite.data.cards import load_card
from suite.data.real import read_part
from suite.errors import SuiteError

DATASETS = ["msrvtt", "msvd", "lsmdc", "didemo", "activitynet"]

HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x00", "\"", "\"\"", "\n", "\r\n", ",", "\t", "\\", "\ufeff", "\u2028", "{",
                     "[", "'", ";"]),
)
LONG_FIELD = 400_000  # characters a unit of ``longer`` adds: past csv's 131072 field limit


class Pristine(dict):
    """Dataset -> annotation file key -> its bytes as written; shown by its folder only."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __repr__(self) -> str:
        return f"Pristine({self.folder})"


@pytest.fixture(scope="module")
def pristine():
    """Every dataset written once in its real format; the bytes of each annotation file."""
    with tempfile.TemporaryDirectory() as tmp:
        files = Pristine(Path(tmp))
        for name in DATASETS:
            root = Path(tmp) / name
            make_dataset(name, root)
            card = load_card(name)
            files[name] = {key: (root / file).read_bytes() for key, file in card.files.items()
                           if (root / file).is_file()}
        yield files


def damaged(data: bytes, how: str, where: float, text: str) -> bytes:
    """``data`` damaged in one way, at the relative position ``where``."""
    at = int(where * len(data))
    payload = text.encode("utf-8", "surrogatepass")
    if how == "insert":
        return data[:at] + payload + data[at:]
    if how == "overwrite":
        return data[:at] + payload + data[at + len(payload):]
    if how == "cut":
        return data[:at]
    if how == "empty":
        return b""
    if how == "utf-16":
        return data.decode("utf-8").encode("utf-16")
    if how == "latin-1":
        return data.decode("utf-8").replace("caption", "caption\u00e9\u00e8").encode("latin-1")
    if how == "captions":  # every caption replaced by the hostile text, format kept
        return data.replace(b"caption", payload)
    raise AssertionError(how)


def damaged_pickle(how: str, text: str, planted: Path) -> bytes:
    """MSVD's raw-captions.pkl with hostile captions, a wrong shape, or a planted call that
    would create the file ``planted`` if it ran."""
    if how == "captions":
        return pickle.dumps({"video0": [text.split() or [text]], "video1": [text]})
    if how == "latin-1":
        return pickle.dumps([text, 1, None])
    return b"cposix\nsystem\n(S'touch " + str(planted).encode() + b"'\ntR."


def check_a_damaged_annotation_file_reads_or_is_one_line(pristine, dataset, how, where, text,
                                                        longer, pick):
    text += "x" * (LONG_FIELD * longer)
    tmp, files = pristine.folder, pristine
    root, card = tmp / dataset, load_card(dataset)
    key = sorted(files[dataset])[pick % len(files[dataset])]
    path = root / card.files[key]
    original = files[dataset][key]
    planted = tmp / "planted"
    if path.suffix == ".pkl" and how in ("captions", "latin-1", "utf-16"):
        path.write_bytes(damaged_pickle(how, text, planted))
    else:
        path.write_bytes(damaged(original, how, where, text))
    try:
        for part in card.splits:
            try:
                read_part(root, card, part)
                event("read")
            except SuiteError as exc:
                event("refused")
                message = str(exc)
                assert message and "\n" not in message.strip(), message[:500]
                assert len(message) < 2000, message[:500]
    finally:
        path.write_bytes(original)
    assert not planted.exists()  # nothing in a file is ever run


# The property, on fixed cases (default run) and on new cases (slow).
test_fixed_cases, test_new_cases = fast_and_long(
    check_a_damaged_annotation_file_reads_or_is_one_line,
    dataset=st.sampled_from(DATASETS),
    how=st.sampled_from(["insert", "overwrite", "cut", "empty", "utf-16", "latin-1", "captions"]),
    where=POSITION,
    text=HOSTILE,
    longer=st.integers(0, 3),
    pick=st.integers(0, 10),
)
