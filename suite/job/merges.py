"""Merge visualisation: which patches of which frames ended up in the same token.

For a merging method (``tempme``, ``tempme-full``, ``tome``) the video encoder can track, for
every token leaving the last block, the original tokens it stands for. Colouring each patch of
each frame by its final token shows what merged: areas inside a frame (ImgMe, ToMe) and, for
TempMe, the same colour across neighbouring frames where ClipMe merged over time.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.errors import UserError


@dataclass(frozen=True)
class MergeMap:
    """``frames`` (F, H, W, 3) uint8 as the model saw them; ``owner`` (F, G, G): the final token
    (numbered over all output sequences) each patch of a G x G grid ended in."""

    frames: np.ndarray
    owner: np.ndarray
    output_sequences: int
    output_tokens: int  # summed over sequences, CLS included

    @property
    def patch_groups(self) -> int:
        """Distinct final tokens the patches went into."""
        return len(np.unique(self.owner))


def merge_map(encoder: Any, frames: np.ndarray, pixels: torch.Tensor, mask: torch.Tensor
              ) -> MergeMap:
    """Run ``encoder`` (with ``forward_with_trace``) on one video and assign every patch to the
    final token that absorbed it. ``frames`` uint8 (F, H, W, 3); ``pixels`` (1, F, 3, S, S)."""
    if not hasattr(encoder, "forward_with_trace"):
        raise UserError("this method does not merge tokens; merge maps exist for tempme, "
                        "tempme-full and tome")
    with torch.no_grad():
        out = encoder.forward_with_trace(pixels, mask, track_sources=True)
    assert out.sources is not None
    sources = out.sources[0]  # (S, N, F*T)
    sequences, tokens, originals = sources.shape
    num_frames = frames.shape[0]
    per_frame = originals // num_frames
    side = int(round((per_frame - 1) ** 0.5))
    if side * side != per_frame - 1:
        raise ValueError(f"{per_frame - 1} patches per frame do not form a square grid")
    owner = sources.reshape(sequences * tokens, originals).argmax(0)
    owner = owner.view(num_frames, per_frame)[:, 1:].reshape(num_frames, side, side)
    return MergeMap(frames, owner.cpu().numpy(), sequences, sequences * tokens)


def _palette(count: int) -> np.ndarray:
    """``count`` well-separated colours (golden-ratio hues), RGB in [0, 1]."""
    hues = (np.arange(count) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues])


def overlay(image: np.ndarray, owner: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """One frame (H, W, 3) uint8 tinted by the colour of each patch's final token, with
    white lines between patches that ended in different tokens. Returns float RGB in [0, 1]."""
    height, width = image.shape[:2]
    grid = owner.shape[0]
    cell_h, cell_w = height / grid, width / grid
    rows = np.minimum((np.arange(height) / cell_h).astype(int), grid - 1)
    cols = np.minimum((np.arange(width) / cell_w).astype(int), grid - 1)
    per_pixel = owner[rows[:, None], cols[None, :]]
    colours = _palette(int(owner.max()) + 1)[per_pixel]
    out = (1 - alpha) * image.astype(float) / 255 + alpha * colours
    edge = np.zeros((height, width), dtype=bool)
    edge[1:] |= per_pixel[1:] != per_pixel[:-1]
    edge[:, 1:] |= per_pixel[:, 1:] != per_pixel[:, :-1]
    out[edge] = 1.0
    return out


def draw(merges: MergeMap, title: str, path: Path) -> Path:
    """A PNG with one panel per frame, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from suite.common.files import write_atomic

    count = merges.frames.shape[0]
    columns = min(count, 6)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.2 * columns, 2.3 * rows + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    for index in range(rows * columns):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_axis_off()
        if index < count:
            axes.imshow(overlay(merges.frames[index], merges.owner[index]))
            axes.set_title(f"frame {index}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    write_atomic(path, partial(figure.savefig, format="png", dpi=120))
    return path


def run_artifacts(run_id: str, uri: str, folder: Path) -> tuple[Path, Path]:
    """Download the ``config.json`` and (if logged) ``trained_weights.pt`` of an MLflow run
    into ``folder`` (without MLflow's progress bars: suite.job.tracking)."""
    from mlflow.exceptions import MlflowException

    from suite.job import tracking

    store = tracking.client(uri)
    try:
        config = Path(store.download_artifacts(run_id, "config.json", str(folder)))
    except MlflowException as exc:
        raise UserError(f"cannot read config.json of run {run_id!r} in {uri}: "
                        f"{str(exc).splitlines()[0]}") from None
    try:
        weights = Path(store.download_artifacts(run_id, "trained_weights.pt", str(folder)))
    except (MlflowException, OSError):
        # Drawing the untrained model under a trained run's name would be a wrong picture.
        raise UserError(f"run {run_id} has no trained_weights.pt (it did not finish, or "
                        f"nothing trained); draw an untrained model with --method") from None
    return config, weights


def visualise(config: Any, weights: Path | None, video: int, split: str, out: Path,
              show_progress: bool = True) -> MergeMap:
    """Build ``config``'s model (with a run's trained weights when given), run one video of
    ``split`` and draw its merge map to ``out``."""
    from suite.common.tensors import load_tensors
    from suite.data.cards import load_card
    from suite.data.loading import ImageSpec, to_pixels
    from suite.data.registry import load_split
    from suite.job import checkpoint
    from suite.job.engine import build_model, seed_everything, trainable_parameters
    from suite.models.backbone import load_backbone

    card = load_card(config.dataset)
    backbone = load_backbone(config.backbone, config.pretrained, "cpu", show_progress,
                             config.trust_torchscript)
    seed_everything(config.train.seed)
    model = build_model(config, backbone)
    if weights is not None:
        state = load_tensors(weights, f"the run's {weights.name} is unreadable")
        problem = checkpoint.first_difference(state, trainable_parameters(model))
        if problem is not None:
            raise UserError(f"the run's {weights.name} does not fit the model its config "
                            f"builds ({problem})")
        model.load_trainable_state(state)
    model.eval()
    data = load_split(card, split, config)
    if not 0 <= video < len(data):
        raise UserError(f"--video {video} is outside the {split} split; valid: 0..{len(data) - 1}")
    clip = data.load(video)
    image = ImageSpec(backbone.image_size, backbone.mean, backbone.std)
    pixels = to_pixels(torch.from_numpy(clip.frames)[None], image, torch.device("cpu"))
    seen = _as_uint8(pixels[0], image)
    merges = merge_map(model.video_encoder, seen, pixels, torch.from_numpy(clip.mask)[None])
    per_frame = merges.owner[0].size + 1
    title = (f"{config.method} on {config.dataset} ({split} video {data.video_ids[video]}): "
             f"{len(seen)} x {per_frame} tokens -> {merges.output_sequences} sequence(s), "
             f"{merges.output_tokens} tokens; patches in {merges.patch_groups} tokens")
    out.parent.mkdir(parents=True, exist_ok=True)
    draw(merges, title, out)
    return merges


def _as_uint8(pixels: torch.Tensor, image: Any) -> np.ndarray:
    """Normalised model input (F, 3, S, S) back to the uint8 frames (F, S, S, 3) it shows."""
    mean = torch.tensor(image.mean).view(1, 3, 1, 1)
    std = torch.tensor(image.std).view(1, 3, 1, 1)
    rgb = (pixels * std + mean).clamp(0, 1).permute(0, 2, 3, 1)
    return (rgb * 255).round().to(torch.uint8).numpy()


def draw_merges(method: str | None, run_id: str | None, dataset: str, sets: list[str],
                uri: str, video: int, split: str, out: Path) -> Any:
    """``suite merges``: the merge map of one video, for ``method`` untrained on ``dataset``
    (with ``sets``) or for the trained run ``run_id``; returns :func:`visualise`'s result."""
    import tempfile

    from suite.job import config as cfg

    with tempfile.TemporaryDirectory(prefix="suite-merges-") as downloads:
        weights = None
        if run_id is not None:
            config_file, weights = run_artifacts(run_id, uri, Path(downloads))
            resolved = cfg.load_file(config_file)
        else:
            assert method is not None
            resolved = cfg.apply_overrides(cfg.base_for(method, dataset), cfg.parse_sets(sets))
        return visualise(resolved, weights, video, split, out)
