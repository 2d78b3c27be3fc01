"""The token-reduction baselines `tome` and `centerclip`, checked against plain references."""

import open_clip
import pytest
import torch

from methods import registry
from methods.centerclip import CenterClipVideoEncoder, kmedoids
from tempme.encoder import baseline_video_embedding


def build(name, clip, backbone, frames, **options):
    method = registry.get(name)
    return method.build(clip, method.make_config(backbone, frames, options), frames, backbone)


def video(batch=2, frames=12, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g), torch.ones(batch, frames,
                                                                               dtype=torch.bool)


# -- k-medoids against a brute-force loop ---------------------------------------------------------


def reference_kmedoids(points: torch.Tensor, k: int, max_iters: int = 100) -> list[int]:
    """One row, float64, plain Python loops: farthest-point start, then assignment/update."""
    n = len(points)
    d = [[float((points[i] - points[j]).norm()) for j in range(n)] for i in range(n)]
    medoids = [min(range(n), key=lambda i: (sum(d[i]), i))]
    while len(medoids) < k:
        nearest = [min(d[i][m] for m in medoids) for i in range(n)]
        rest = [i for i in range(n) if i not in medoids]
        medoids.append(max(rest, key=lambda i: (nearest[i], -i)))
    for _ in range(max_iters):
        labels = [min(range(k), key=lambda c: (d[i][medoids[c]], c)) for i in range(n)]
        updated = []
        for c in range(k):
            members = [i for i in range(n) if labels[i] == c]
            updated.append(min(members, key=lambda i: (sum(d[i][j] for j in members), i))
                           if members else medoids[c])
        if updated == medoids:
            break
        medoids = updated
    return sorted(medoids)


@pytest.mark.parametrize("n, k", [(12, 3), (30, 7), (20, 20), (9, 1)])
def test_kmedoids_matches_a_brute_force_loop(n, k):
    x = torch.randn(3, n, 5, generator=torch.Generator().manual_seed(n + k), dtype=torch.float64)
    medoids, labels = kmedoids(x, k)
    for row in range(3):
        assert medoids[row].tolist() == reference_kmedoids(x[row], k)
        distances = torch.cdist(x[row], x[row])[:, medoids[row]]
        assert torch.equal(labels[row], distances.argmin(-1))  # every token at its nearest


def test_kmedoids_picks_distinct_tokens_among_duplicates():
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    x = base.repeat(3, 1).unsqueeze(0)  # 12 tokens, 4 distinct values, each three times
    medoids, labels = kmedoids(x, 4)
    assert len(set(medoids[0].tolist())) == 4
    chosen = x[0, medoids[0]]
    assert len({tuple(row.tolist()) for row in chosen}) == 4  # one medoid per distinct token


def test_kmedoids_refuses_more_clusters_than_tokens():
    with pytest.raises(ValueError, match="cannot make 5 clusters of 4 tokens"):
        kmedoids(torch.randn(1, 4, 2), 5)


# -- centerclip --------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_clustering_that_keeps_every_token_equals_per_frame_clip(tiny_clip, layer):
    """One frame per segment and as many medoids as patches: nothing is removed or reordered."""
    encoder = CenterClipVideoEncoder(tiny_clip.visual, 12, cluster_layer=layer, segments=12,
                                     clusters=36).eval()
    frames, mask = video()
    mask[1, 7:] = False
    with torch.no_grad():
        torch.testing.assert_close(encoder(frames, mask),
                                   baseline_video_embedding(tiny_clip.visual, frames, mask),
                                   atol=1e-5, rtol=1e-5)


def test_segments_become_sequences_of_cls_tokens_and_medoids(tiny_clip):
    encoder = CenterClipVideoEncoder(tiny_clip.visual, 12, cluster_layer=3, segments=4,
                                     clusters=20).eval()
    shapes = []
    tiny_clip.visual.transformer.resblocks[-1].register_forward_hook(
        lambda m, i, o: shapes.append(o.shape))
    with torch.no_grad():
        encoder(*video(batch=2))
    assert shapes[-1] == (2 * 4, 3 + 20, 64)  # 3 CLS tokens + 20 medoids per segment


def test_frames_of_one_segment_see_each_other_after_clustering(tiny_clip):
    encoder = CenterClipVideoEncoder(tiny_clip.visual, 12, cluster_layer=3, segments=4,
                                     clusters=36).eval()
    frames, mask = video(batch=1)
    only_first = torch.zeros_like(mask)
    only_first[0, 0] = True  # the embedding is then frame 0's alone
    changed = frames.clone()
    changed[0, 1] += 1.0  # frame 1 shares frame 0's segment
    far = frames.clone()
    far[0, 11] += 1.0  # frame 11 does not
    with torch.no_grad():
        reference = encoder(frames, only_first)
        torch.testing.assert_close(encoder(far, only_first), reference)
        assert not torch.allclose(encoder(changed, only_first), reference, atol=1e-4)


def test_centerclip_defaults_follow_the_paper_on_vit_b_32():
    config = registry.get("centerclip").make_config("ViT-B-32", 12, {})
    assert (config.cluster_layer, config.segments, config.clusters, config.rank) == (7, 4, 49, 8)
    model = build("centerclip", open_clip.create_model("ViT-B-32"), "ViT-B-32", 12)
    assert sum(p.numel() for p in model.trainable_parameters()) == 491_520  # LoRA only


def test_centerclip_without_lora_trains_every_backbone_weight(tiny_clip):
    model = build("centerclip", tiny_clip, "tiny-clip", 12, rank=None)
    new, pretrained = model.parameter_groups()
    assert new == [] and len(pretrained) == len(list(tiny_clip.parameters())) - 1


@pytest.mark.parametrize("options, fragment", [
    ({"segments": 5}, "does not divide 12 frames; valid: 1, 2, 3, 4, 6, 12"),
    ({"clusters": 200}, "clusters must be within 1..108"),
    ({"cluster_layer": 6}, "valid: 0..5"),
    ({"rank": 0}, "rank must be >= 1 or null"),
])
def test_invalid_centerclip_options_are_refused(options, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        registry.get("centerclip").make_config("tiny-clip", 12, options)


# -- tome --------------------------------------------------------------------------------------


def test_tome_without_merging_equals_per_frame_clip(tiny_clip):
    model = build("tome", tiny_clip, "tiny-clip", 12, r=0).eval()
    frames, mask = video()
    with torch.no_grad():
        torch.testing.assert_close(model.video_encoder(frames, mask),
                                   baseline_video_embedding(tiny_clip.visual, frames, mask),
                                   atol=1e-5, rtol=1e-5)


def test_tome_merges_r_tokens_per_frame_in_every_block(tiny_clip):
    model = build("tome", tiny_clip, "tiny-clip", 12, r=4).eval()
    with torch.no_grad():
        trace = model.video_encoder.forward_with_trace(*video(batch=1)).trace
    tokens, expected = 37, []
    for _ in range(6):
        tokens -= min(4, (tokens - 1) // 2)  # r, capped at half the patch tokens
        expected.append((12, tokens))
    assert [(row.sequences, row.after_intra) for row in trace] == expected


def test_tome_keeps_frames_independent(tiny_clip):
    model = build("tome", tiny_clip, "tiny-clip", 12, r=3).eval()
    frames, mask = video(batch=1)
    changed = frames.clone()
    changed[0, 5] += 1.0
    with torch.no_grad():
        before = model.video_encoder.forward_with_trace(frames, mask).frame_embeddings
        after = model.video_encoder.forward_with_trace(changed, mask).frame_embeddings
    unchanged = [f for f in range(12) if f != 5]
    torch.testing.assert_close(after[0, unchanged], before[0, unchanged])
    assert not torch.allclose(after[0, 5], before[0, 5], atol=1e-4)


def test_tome_defaults_and_parameters_on_vit_b_32():
    assert registry.get("tome").make_config("ViT-B-32", 12, {}).r == 3
    assert registry.get("tome").make_config("ViT-B-16", 12, {}).r == 13
    model = build("tome", open_clip.create_model("ViT-B-32"), "ViT-B-32", 12)
    assert sum(p.numel() for p in model.trainable_parameters()) == 491_520  # LoRA only


@pytest.mark.parametrize("name", ["tome", "centerclip"])
def test_lora_folds_without_changing_embeddings(tiny_clip, name):
    model = build(name, tiny_clip, "tiny-clip", 12).eval()
    frames, mask = video()
    with torch.no_grad():
        for param_name, p in model.named_parameters():
            if "lora_B" in param_name:
                p.normal_(0, 0.05)
        before = model.encode_video(frames, mask)
        model.fold()
        after = model.encode_video(frames, mask)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)


def test_a_fresh_process_checks_tiny_clip_options_against_its_real_depth():
    """`suite profile` checks method options before building anything: the embedded tiny-clip
    config must be registered by then (6 blocks), not guessed as a 12-block tower."""
    import subprocess
    import sys

    code = ("from suite.cli import _check_method_config\n"
            "from suite.errors import UserError\n"
            "try:\n"
            "    _check_method_config('centerclip', 'tiny-clip', 12, {'cluster_layer': 7})\n"
            "except UserError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "cluster_layer 7 is outside the backbone; valid: 0..5" in out.stdout


def test_vision_depth_of_an_unknown_backbone_is_an_error():
    from methods.tempme import vision_depth

    with pytest.raises(ValueError, match="unknown backbone 'ViT-Q-99'"):
        vision_depth("ViT-Q-99")
