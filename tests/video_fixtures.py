"""Tiny real-format datasets written by the tests themselves: PyAV videos whose frames show their
own index, and annotation files with the names and columns of the real datasets.

Every frame draws a 4 x 6 grid of black/white cells in its centre square: 24 bits, the frame
index in the low 16 and a per-video tag in the high 8. Cells are large and binary, so the code
survives compression, resizing and the centre crop; ``read_code`` reads it back.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROWS, COLS = 4, 6
CODECS = {".mp4": "libx264", ".mov": "libx264", ".webm": "libvpx", ".avi": "mpeg4",
          ".mkv": "libvpx-vp9"}


def code_image(index: int, tag: int = 0, width: int = 64, height: int = 48) -> np.ndarray:
    """An RGB frame showing ``index`` (16 bits) and ``tag`` (8 bits) in its centre square."""
    value = (tag << 16) | index
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    img = np.full((height, width, 3), 64, np.uint8)
    ch, cw = side // ROWS, side // COLS
    for bit in range(ROWS * COLS):
        r, c = divmod(bit, COLS)
        shade = 255 if (value >> bit) & 1 else 0
        img[top + r * ch:top + (r + 1) * ch, left + c * cw:left + (c + 1) * cw] = shade
    return img


def read_code(frame: np.ndarray) -> tuple[int, int]:
    """(tag, frame index) shown by a frame (any size, possibly centre-cropped to a square)."""
    h, w = frame.shape[:2]
    side = min(h, w)
    square = frame[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    grey = square.astype(np.float32).mean(-1)
    value = 0
    for bit in range(ROWS * COLS):
        r, c = divmod(bit, COLS)
        y0, y1 = r * side // ROWS, (r + 1) * side // ROWS
        x0, x1 = c * side // COLS, (c + 1) * side // COLS
        pad_y, pad_x = max(1, (y1 - y0) // 4), max(1, (x1 - x0) // 4)  # ignore blurred edges
        if grey[y0 + pad_y:y1 - pad_y, x0 + pad_x:x1 - pad_x].mean() > 128:
            value |= 1 << bit
    return value >> 16, value & 0xFFFF


def frame_indices(clip: np.ndarray) -> list[int]:
    return [read_code(f)[1] for f in clip]


def write_video(path: Path, frames: int, fps: int | Fraction = 10, tag: int = 0,
                width: int = 64, height: int = 48, gop: int | None = None) -> Path:
    """A video of ``frames`` frames at ``fps`` (a Fraction for NTSC rates such as 30000/1001);
    the codec follows the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = CODECS[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(code_image(i, tag, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_corrupt(path: Path) -> Path:
    """A video file cut off after its first bytes: it exists but cannot be opened."""
    write_video(path, 10)
    path.write_bytes(path.read_bytes()[:300])
    return path


@dataclass
class Fixture:
    """A generated dataset: where it is and what it holds."""

    root: Path
    videos: Path
    parts: dict[str, list[str]]  # annotation part -> video ids, in file order
    missing: list[str] = field(default_factory=list)  # ids without a file
    corrupt: list[str] = field(default_factory=list)  # ids whose file cannot be decoded
    tags: dict[str, int] = field(default_factory=dict)  # id -> tag drawn in its frames
    captions: dict[str, list[str]] = field(default_factory=dict)  # id -> captions in file order


def _videos(fx: Fixture, names: dict[str, str], lengths: list[int]) -> None:
    """Write a file ``names[id]`` for every id, except missing (none) and corrupt (broken)."""
    for n, (video, name) in enumerate(names.items()):
        fx.tags[video] = n + 1
        if video in fx.missing:
            continue
        if video in fx.corrupt:
            write_corrupt(fx.videos / name)
        else:
            write_video(fx.videos / name, lengths[n % len(lengths)], tag=n + 1)


LENGTHS = [25, 12, 31, 7]  # frames at 10 fps: 2.5 s, 1.2 s, 3.1 s, 0.7 s


def make_msrvtt(root: Path, n_train: int = 8, n_test: int = 4, captions: int = 3) -> Fixture:
    """MSRVTT_data.json, the 9k/7k training csv files, the JSFUSION test csv; one training
    video missing, one test video corrupt, one training video as .webm."""
    train = [f"video{i}" for i in range(n_train)]
    test = [f"video{i}" for i in range(n_train, n_train + n_test)]
    fx = Fixture(root, root / "videos", {"train": train, "train_7k": train[:-2], "test": test},
                 missing=[train[-1]], corrupt=[test[-1]])
    sentences = []
    for v in train + test:
        fx.captions[v] = [f"caption {k} of {v}" for k in range(captions)]
        sentences += [{"caption": c, "video_id": v, "sen_id": len(sentences)}
                      for c in fx.captions[v]]
    data = {"info": {"year": 2016}, "videos": [
        {"category": 0, "url": "https://example.invalid", "video_id": v, "start time": 0.0,
         "end time": 2.0, "split": "train" if v in train else "test", "id": i}
        for i, v in enumerate(train + test)], "sentences": sentences}
    root.mkdir(parents=True, exist_ok=True)
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in train))
    (root / "MSRVTT_train.7k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in train[:-2]))
    rows = ["key,vid_key,video_id,sentence"] + [
        f"ret{i},msr{v[5:]},{v},\"{fx.captions[v][0]}, in the test\"" for i, v in enumerate(test)]
    (root / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(rows) + "\n")
    for v in test:
        fx.captions[v] = [f"{fx.captions[v][0]}, in the test"]
    names = {v: f"{v}.webm" if v == train[1] else f"{v}.mp4" for v in train + test}
    _videos(fx, names, LENGTHS)
    return fx


def make_msvd(root: Path, counts: tuple[int, int, int] = (5, 2, 3)) -> Fixture:
    """train/val/test lists and raw-captions.pkl (token lists); .avi videos (mpeg4)."""
    ids = [f"vid{i:02d}_{i * 3}_{i * 3 + 5}" for i in range(sum(counts))]
    a, b = counts[0], counts[0] + counts[1]
    fx = Fixture(root, root / "videos", {"train": ids[:a], "val": ids[a:b], "test": ids[b:]},
                 missing=[ids[0]], corrupt=[ids[b]])
    raw = {v: [["a", "person", "does", str(i)], ["someone", "acts", str(i)]]
           for i, v in enumerate(ids)}
    fx.captions = {v: [" ".join(c) for c in caps] for v, caps in raw.items()}
    root.mkdir(parents=True, exist_ok=True)
    for part, name in (("train", "train_list.txt"), ("val", "val_list.txt"),
                       ("test", "test_list.txt")):
        (root / name).write_text("".join(f"{v}\n" for v in fx.parts[part]))
    with (root / "raw-captions.pkl").open("wb") as f:
        pickle.dump(raw, f)
    _videos(fx, {v: f"{v}.avi" for v in ids}, LENGTHS)
    return fx


def make_lsmdc(root: Path, counts: tuple[int, int, int] = (5, 2, 3)) -> Fixture:
    """The three tab-separated LSMDC16 files; clips in per-movie folders; a training clip has
    two sentences (clip ids repeat in the real training file)."""
    movies = ["0001_American_Beauty", "1010_TITANIC"]
    ids = [f"{movies[i % 2]}_00.{i:02d}.51.926-00.{i:02d}.54.129" for i in range(sum(counts))]
    a, b = counts[0], counts[0] + counts[1]
    fx = Fixture(root, root / "videos", {"train": ids[:a], "val": ids[a:b], "test": ids[b:]},
                 missing=[ids[a]], corrupt=[ids[1]])
    root.mkdir(parents=True, exist_ok=True)
    files = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
             "test": "LSMDC16_challenge_1000_publictect.csv"}
    for part, name in files.items():
        lines = []
        for v in fx.parts[part]:
            sentences = [f"SOMEONE walks into shot {v[-6:]}."]
            if part == "train" and v == ids[0]:
                sentences.append("SOMEONE turns around.")
            fx.captions[v] = sentences
            lines += [f"{v}\t00.00.51.926\t00.00.54.129\t00.00.51.000\t00.00.54.000\t{s}"
                      for s in sentences]
        (root / name).write_text("\n".join(lines) + "\n")
    _videos(fx, {v: f"{v.rsplit('_00.', 1)[0]}/{v}.avi" for v in ids}, LENGTHS)
    return fx


def make_didemo(root: Path, counts: tuple[int, int, int] = (5, 2, 3)) -> Fixture:
    """{train,val,test}_data.json with several descriptions per video (paragraph mode); files
    named exactly as the "video" field (.mov, .mp4), one copy re-encoded to .mp4 from .mov."""
    ids = [f"{1000 + i}@N0{i % 3}_{5000 + i}_{i:04x}beef.{'mov' if i % 2 else 'mp4'}"
           for i in range(sum(counts))]
    a, b = counts[0], counts[0] + counts[1]
    fx = Fixture(root, root / "videos", {"train": ids[:a], "val": ids[a:b], "test": ids[b:]},
                 missing=[ids[1]], corrupt=[ids[b + 1]])
    root.mkdir(parents=True, exist_ok=True)
    for part in ("train", "val", "test"):
        entries = []
        for v in fx.parts[part]:
            texts = [f"the dog runs in {v[:4]}", "a car passes", "someone waves"]
            fx.captions[v] = [" ".join(texts)]
            entries += [{"annotation_id": len(entries), "description": t, "video": v,
                         "times": [[k, k + 1], [k, k]], "dl_link": "https://example.invalid"}
                        for k, t in enumerate(texts)]
        (root / f"{part}_data.json").write_text(json.dumps(entries))
    names = {v: v for v in ids}
    names[ids[3]] = ids[3].rsplit(".", 1)[0] + ".mp4"  # a re-encoded copy of a .mov
    _videos(fx, names, [64, 25, 12, 40])
    return fx


def make_activitynet(root: Path, counts: tuple[int, int] = (8, 4)) -> Fixture:
    """train.json / val_1.json (id -> duration, timestamps, sentences), train_ids.json and
    val_ids.json (val_ids lists one id val_1.json lacks); files named by the id without "v_"."""
    ids = [f"v_{chr(65 + i)}x{i:02d}_YtId{i}" for i in range(sum(counts) + 1)]
    train, val = ids[:counts[0]], ids[counts[0]:-1]
    fx = Fixture(root, root / "videos", {"train": train, "val_1": val},
                 missing=[train[2]], corrupt=[val[0]])
    root.mkdir(parents=True, exist_ok=True)
    for name, members in (("train.json", train), ("val_1.json", val)):
        data = {}
        for v in members:
            sentences = [f"A man in {v[2:6]} stands.", " He jumps over a bar.  "]
            fx.captions[v] = [" ".join(s.strip() for s in sentences)]
            data[v] = {"duration": 3.1, "timestamps": [[0, 1.5], [1.5, 3.1]],
                       "sentences": sentences}
        (root / name).write_text(json.dumps(data))
    (root / "train_ids.json").write_text(json.dumps(train))
    (root / "val_ids.json").write_text(json.dumps(val + [ids[-1]]))
    _videos(fx, {v: f"{v[2:]}.mp4" for v in ids[:-1]}, [64, 25, 12, 40])
    return fx


MAKERS = {"msrvtt": make_msrvtt, "msvd": make_msvd, "lsmdc": make_lsmdc, "didemo": make_didemo,
          "activitynet": make_activitynet}


def make_dataset(name: str, root: Path) -> Fixture:
    return MAKERS[name](root)
