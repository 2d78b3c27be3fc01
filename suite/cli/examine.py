"""``suite profile`` (what a method costs) and ``suite merges`` (which patches merged)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from suite.cli.common import JsonOut, Sets, TrackingUri, echo_json, guarded
from suite.errors import UserError

PROFILE_SUMMARY = "Measure what a method costs: GFLOPs, tokens, parameters, memory, speed."
PROFILE_EXAMPLES = """Examples:

\b
  suite profile --method tempme --backbone ViT-B-32
  suite profile --all --backbone ViT-B-16 --counts-only --markdown
  suite profile --method tome --set method.r=10 --json
"""
MERGES_SUMMARY = "Draw which patches of which frames merged into the same token, for one video."
MERGES_EXAMPLES = """Examples:

\b
  suite merges --method tempme --out merges.png
  suite merges --run RUN_ID --video 3
"""


@guarded
def profile(
    method: Annotated[str | None, typer.Option(
        help="Method (`suite list methods`); or --all.")] = None,
    backbone: Annotated[str, typer.Option(help="open_clip model name.")] = "ViT-B-32",
    frames: Annotated[int, typer.Option(min=1, help="Frames per video.")] = 12,
    words: Annotated[int, typer.Option(min=2, help="Tokens per caption.")] = 32,
    batch: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="Inference batch (default: 32 on CUDA, 4 on CPU).")] = None,
    train_batch: Annotated[int | None, typer.Option(
        "--train-batch-size", min=1,
        help="Batch of the timed training step (default: --batch-size).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="method.NAME=VALUE, repeatable (default: the method's defaults).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Profile every method.")] = False,
    json_out: JsonOut = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    counts_only: Annotated[bool, typer.Option(
        "--counts-only", help="Multiply-adds, tokens and parameters only: no timed runs.")] = False,
    precision: Annotated[str, typer.Option(
        help="Inference precision: auto (fp32 on CPU, fp16 on CUDA), fp32, bf16, fp16.")] = "auto",
    compile_: Annotated[bool, typer.Option(
        "--compile", help="Time inference through torch.compile of the video tower.")] = False,
) -> None:
    """Measure what a method costs: GFLOPs, tokens, parameters, memory, speed.

    GFLOPs are multiply-adds of the video tower per video (the papers' convention); speed is
    set against this machine's measured matmul peak; weights are random.
    """
    from methods.registry import discover
    from suite.cost.profiling import method_options, profile_methods
    from suite.job.config import parse_sets

    if method is None and not all_:
        raise UserError("--method M or --all is required; see `suite list methods`")
    if method is not None and all_:
        raise UserError("give either --method or --all, not both")
    options = method_options(parse_sets(set_ or []))
    rows = profile_methods(discover() if all_ else [method], backbone, frames, words, device,
                           batch, train_batch, {} if all_ else options,
                           counts_only=counts_only, precision=precision, compile_video=compile_)
    if json_out:
        echo_json(rows if all_ else rows[0])
    elif markdown:
        from reports.cost import cost_markdown

        typer.echo(cost_markdown(rows))
    else:
        from reports.cost import cost_table
        from suite.common.progress import stdout

        stdout.print(cost_table(rows))


@guarded
def merges(
    method: Annotated[str | None, typer.Option(
        help="A merging method (tempme, tempme-full, tome), untrained; or --run.")] = None,
    run_id: Annotated[str | None, typer.Option(
        "--run", help="MLflow run id: its config and trained weights.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset card (with --method).")] = "synthetic",
    split: Annotated[str, typer.Option(help="Split the video comes from.")] = "test",
    video: Annotated[int, typer.Option(help="Index of the video in the split.")] = 0,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("merges.png"),
    set_: Sets = None,
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = False,
) -> None:
    """Draw which patches of which frames merged into the same token, for one video."""
    from suite.job.merges import draw_merges
    from suite.job.tracking import tracking_uri as resolve_uri

    if (method is None) == (run_id is None):
        raise UserError("give either --method M or --run RUN_ID")
    result = draw_merges(method, run_id, dataset, set_ or [], resolve_uri(tracking_uri),
                         video, split, out)
    if json_out:
        echo_json({"out": str(out), "output_sequences": result.output_sequences,
                   "output_tokens": result.output_tokens, "patch_groups": result.patch_groups})
    else:
        typer.echo(f"{out}: {result.output_sequences} sequence(s), {result.output_tokens} "
                   f"tokens; patches merged into {result.patch_groups} tokens")
