"""``suite run``: one method on one dataset, trained, selected, tested and logged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from suite.cli.common import (
    CheckpointDir,
    DataRoot,
    Device,
    Experiment,
    JsonOut,
    Sets,
    TrackingUri,
    echo_json,
    guarded,
    stop_on_sigterm,
)
from suite.errors import UserError

SUMMARY = "Fine-tune and evaluate one method on one dataset, and log everything to MLflow."
EXAMPLES = """Examples:

\b
  suite run --method tempme                      # the embedded default (synthetic, tiny CLIP)
  suite run --method tempme --dataset msrvtt --data-root ~/data/msrvtt \\
      --backbone ViT-B-32 --pretrained openai
  suite run --method lora --epochs 1 --set train.lr=1e-3 --set data.num_train=64
  suite run --resume RUN_ID                      # continue an interrupted run
"""


@guarded
def run(
    method: Annotated[str | None, typer.Option(
        help="Method name (`suite list methods`).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Dataset card (`suite list datasets`); default: synthetic, the embedded videos "
             "with a tiny CLIP, nothing to download.")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="open_clip model name (default: the card's, e.g. ViT-B-32).")] = None,
    pretrained: Annotated[str | None, typer.Option(
        help="open_clip tag, local checkpoint path, 'synthetic' (tiny CLIP) or 'none' "
             "(default: the card's).")] = None,
    trust_torchscript: Annotated[bool, typer.Option(
        "--trust-torchscript", help="Load a local TorchScript --pretrained file (OpenAI's .pt), "
        "which runs the code inside it.")] = False,
    epochs: Annotated[int | None, typer.Option(
        min=0, help="Training epochs (default: the card's; 0 evaluates only).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Global training batch (default: the card's).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of weights, data order and held-out split (default: the card's).")] = None,
    frames: Annotated[int | None, typer.Option(
        min=1, help="Frames sampled per video (default: the card's, 12 or 64).")] = None,
    data_root: DataRoot = None,
    device: Device = None,
    select_on: Annotated[str | None, typer.Option(
        help="val (default: select on validation), last (train on the whole split, keep the "
             "final epoch) or test (the papers' practice; tagged).")] = None,
    preset: Annotated[str | None, typer.Option(
        help="A paper's own practice for every protocol choice (`suite list presets`; "
             "default: none).")] = None,
    on_bad_video: Annotated[str | None, typer.Option(
        help="fail (default) or skip missing or undecodable videos.")] = None,
    experiment: Experiment = None,
    set_: Sets = None,
    config: Annotated[Path | None, typer.Option(
        help="Replay a logged config.json (flags and --set apply on top).")] = None,
    tracking_uri: TrackingUri = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue an interrupted run (MLflow run id) from its last epoch.")] = None,
    checkpoint_dir: CheckpointDir = Path("checkpoints"),
    json_out: JsonOut = False,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", metavar="KEY=VALUE",
        help="key=value tag added to the MLflow run, repeatable.")] = None,
) -> None:
    """Fine-tune and evaluate one method on one dataset, and log everything to MLflow.

    Without --dataset the run uses the embedded default: generated videos and a tiny CLIP that
    the suite pre-trains itself once (cached under ~/.cache/tvr-suite).
    """
    from suite.job import engine, request

    stop_on_sigterm()
    given = (method, dataset, backbone, pretrained, epochs, batch_size, seed, frames, data_root,
             device, select_on, on_bad_video, experiment, set_, config, preset, tag)
    if resume is not None:
        if any(value is not None for value in given):
            raise UserError("--resume takes no other settings: the run's config is in its "
                            "checkpoint (only --tracking-uri, --checkpoint-dir and --json)")
        print_result(engine.resume_run(resume, tracking_uri, True, checkpoint_dir), json_out)
        return
    flags = {"method": method, "dataset": dataset, "backbone": backbone, "frames": frames,
             "pretrained": pretrained, "trust_torchscript": trust_torchscript or None,
             "data_root": data_root, "device": device, "select_on": select_on,
             "on_bad_video": on_bad_video, "experiment": experiment,
             "train.epochs": epochs, "train.batch_size": batch_size, "train.seed": seed}
    resolved = request.resolve_run(method, dataset, preset, config, flags, set_ or [])
    result = engine.run(resolved, tracking_uri, show_progress=True,
                        tags=request.parse_tags(tag or []), checkpoints=checkpoint_dir)
    print_result(result, json_out)


def print_result(result: Any, json_out: bool) -> None:
    """A finished run's test figures: one line, or JSON with the run id (under torchrun, by
    the main process only)."""
    from suite.job.distributed import is_main_process

    if not is_main_process():
        return
    if json_out:
        echo_json({"run_id": result.run_id, "test": result.test,
                   "best_epoch": result.best_epoch, "skipped_videos": result.skipped})
        return
    m = result.test
    typer.echo(f"run {result.run_id}: test t2v R@1 {m['t2v_R1']:.1f} R@5 {m['t2v_R5']:.1f} "
               f"R@10 {m['t2v_R10']:.1f} MdR {m['t2v_MdR']:.1f} R-Sum {m['t2v_rsum']:.1f}")
    for split, count in result.skipped.items():
        typer.echo(f"  {split}: {count} video(s) skipped (--on-bad-video skip)"
                   + ("; each of their captions counts as a miss" if split == "test" else ""))
