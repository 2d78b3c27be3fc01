"""Padding frames (``data.policy=clip4clip``) in the merging methods: tome and centerclip keep
them out of everything that reaches the embedding, tempme and tempme-full refuse them."""

import pytest
import torch
from typer.testing import CliRunner

from methods import registry
from methods.centerclip import CenterClipVideoEncoder
from methods.tome import schedule_of
from suite.cli import app
from suite.errors import UserError
from suite.job.config import RunConfig
from tempme.encoder import TempMeVideoEncoder


def build(name, clip, frames=12, **options):
    method = registry.get(name)
    return method.build(clip, method.make_config("tiny-clip", frames, options), frames,
                        "tiny-clip")


def padded(real: int, batch: int = 2, frames: int = 12, seed: int = 0):
    """Random frames whose last ``frames - real`` are padding (black in pixels: zeros after the
    suite's padding, any value here), and their mask."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, frames, 3, 48, 48, generator=g)
    pixels[:, real:] = 0.0
    mask = (torch.arange(frames) < real).expand(batch, -1).clone()
    return pixels, mask


def other_padding(pixels: torch.Tensor, real: int) -> torch.Tensor:
    """The same clip with different content in its padding frames."""
    changed = pixels.clone()
    changed[:, real:] = torch.randn(changed[:, real:].shape,
                                    generator=torch.Generator().manual_seed(99))
    return changed


def model_config(name, **options):
    return registry.get(name).make_config("tiny-clip", 12, options)


# -- tome: frames never mix -------------------------------------------------------------------


@pytest.mark.parametrize("real", [1, 5, 11])
def test_a_padded_clip_embeds_as_its_real_frames_alone_under_tome(tiny_clip, real):
    model = build("tome", tiny_clip, r=3).eval()
    alone = TempMeVideoEncoder(tiny_clip.visual, schedule_of(model_config("tome", r=3)), real)
    pixels, mask = padded(real)
    with torch.no_grad():
        got = model.video_encoder(pixels, mask)
        torch.testing.assert_close(got, alone(pixels[:, :real], mask[:, :real]))
        torch.testing.assert_close(model.video_encoder(other_padding(pixels, real), mask), got)


# -- centerclip: padding left out of clustering, CLS means and pooling -------------------------


def centerclip(visual, frames, segments, clusters=36):
    return CenterClipVideoEncoder(visual, frames, cluster_layer=3, segments=segments,
                                  clusters=clusters).eval()


@pytest.mark.parametrize("real, kept, segments", [
    (6, 6, 2),   # whole segments: the clip is its two real segments
    (7, 6, 2),   # a partial segment is dropped, as the official last-frame mask does
    (11, 9, 3),
    (2, 2, 1),   # shorter than a segment: its real frames form the one segment pooled
    (1, 1, 1),
])
def test_a_padded_clip_embeds_as_its_complete_segments_alone_under_centerclip(
        tiny_clip, real, kept, segments):
    encoder = centerclip(tiny_clip.visual, 12, 4)
    alone = centerclip(tiny_clip.visual, kept, segments)
    pixels, mask = padded(real)
    with torch.no_grad():
        got = encoder(pixels, mask)
        torch.testing.assert_close(got, alone(pixels[:, :kept], mask[:, :kept]))
        torch.testing.assert_close(encoder(other_padding(pixels, real), mask), got)


def test_a_pooled_segment_short_of_real_tokens_for_its_clusters_is_refused(tiny_clip):
    """40 medoids from one real frame of 36 patches cannot leave the padding out."""
    encoder = centerclip(tiny_clip.visual, 12, 4, clusters=40)
    with torch.no_grad(), pytest.raises(ValueError, match="fewer real patch tokens"):
        encoder(*padded(1))
    # A partial segment that is not pooled keeps its padding, as the official code does, and
    # changes nothing: 7 real frames embed as their first two segments.
    pixels, mask = padded(7)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels, mask),
                                   centerclip(tiny_clip.visual, 6, 2, clusters=40)(
                                       pixels[:, :6], mask[:, :6]))


# -- tempme, tempme-full: refused ------------------------------------------------------------


@pytest.mark.parametrize("name", ["tempme", "tempme-full"])
def test_tempme_refuses_padded_clips(tiny_clip, name):
    model = build(name, tiny_clip).eval()
    pixels, mask = padded(7)
    with torch.no_grad(), pytest.raises(ValueError, match="cannot take padded clips"):
        model.encode_video(pixels, mask)
    with torch.no_grad():
        model.encode_video(pixels, torch.ones_like(mask))  # a full clip is fine


@pytest.mark.parametrize("name, refused", [("tempme", True), ("tempme-full", True),
                                           ("tome", False), ("centerclip", False),
                                           ("lora", False), ("zeroshot", False)])
def test_the_run_check_refuses_only_methods_that_cannot_take_padding(name, refused):
    refusal = registry.padding_refusal(name, "clip4clip")
    assert (refusal is not None) == refused
    assert registry.padding_refusal(name, "tempme") is None
    assert registry.padding_refusal(name, None) is None


def test_a_run_of_tempme_with_the_padding_policy_is_refused_before_anything(tmp_path,
                                                                            monkeypatch):
    from suite.job import engine

    config = RunConfig(method="tempme", dataset="msrvtt", backbone="tiny-clip",
                       data_root=str(tmp_path), data_options={"policy": "clip4clip"})
    with pytest.raises(UserError, match="method 'tempme' cannot take padded clips"):
        engine.check(config)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--method", "tempme", "--dataset", "msrvtt",
                                      "--data-root", str(tmp_path),
                                      "--set", "data.policy=clip4clip"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "use data.policy=tempme" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no checkpoint
