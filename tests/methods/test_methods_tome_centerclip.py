"""The token-reduction baselines `tome` and `centerclip`, checked against plain references."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from cliptools.towers import embed_images
from methods import registry
from methods.centerclip import CenterClipVideoEncoder, kkz_start, kmedoids, pairwise_distances
from tempme.encoder import baseline_video_embedding


def build(name, clip, backbone, frames, **options):
    method = registry.get(name)
    return method.build(clip, method.make_config(backbone, frames, options), frames, backbone)


def video(batch=2, frames=12, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g), torch.ones(batch, frames,
                                                                               dtype=torch.bool)


# -- k-medoids against a brute-force loop ---------------------------------------------------------


def reference_kmedoids(points: torch.Tensor, k: int, max_iters: int = 100,
                       threshold: float = 1e-6, valid: list[bool] | None = None) -> list[int]:
    """One row, float64, plain Python loops: the official algorithm transcribed
    (mzhaoshuai/CenterCLIP@cfce759 ``modules/cluster/cluster_utils.py`` ``pairwise_distance``
    38-41, ``KKZ_init`` 106-118; ``fast_kmeans.py`` ``batch_fast_kmedoids`` 72-94):

        dis[..., diag, diag] -= 1.0                       # every point its own nearest
        _, medoids[:, 0] = torch.max(l2_norm, dim=1)      # KKZ: largest norm first
        values, indices = torch.min(sub_dis_matrix, dim=1); values_, indices_ = torch.max(...)
        min_dis, cluster_assginment = torch.min(sub_dis_matrix, dim=1)
        mediods = torch.argmin(torch.sum(sub_matrix, dim=-1), dim=-1)
        center_shift = ...sqrt().sum(dim=-1).mean(); if center_shift < threshold: break
        mediods, _ = torch.sort(mediods, dim=1)

    ``valid`` leaves tokens out (the suite's padding rule), as if they were not there."""
    idx = [i for i in range(len(points)) if valid is None or valid[i]]
    d = {(i, j): float((points[i] - points[j]).norm()) if i != j else -1.0
         for i in idx for j in idx}
    medoids = [max(idx, key=lambda i: (float(points[i].norm()), -i))]
    while len(medoids) < k:
        nearest = {i: min(d[i, m] for m in medoids) for i in idx}
        medoids.append(max(idx, key=lambda i: (nearest[i], -i)))
    for _ in range(max_iters):
        labels = {i: min(range(k), key=lambda c: (d[medoids[c], i], c)) for i in idx}
        updated = []
        for c in range(k):
            members = [i for i in idx if labels[i] == c]
            updated.append(min(members, key=lambda i: (sum(d[i, j] for j in members), i)))
        moves = zip(updated, medoids, strict=True)
        shift = sum(float((points[u] - points[m]).norm()) for u, m in moves)
        medoids = updated
        if shift < threshold:
            break
    return sorted(medoids)


@pytest.mark.parametrize("n, k", [(12, 3), (30, 7), (20, 20), (9, 1), (40, 13)])
def test_kmedoids_matches_a_brute_force_loop(n, k):
    x = torch.randn(3, n, 5, generator=torch.Generator().manual_seed(n + k), dtype=torch.float64)
    medoids, labels = kmedoids(x, k)
    for row in range(3):
        assert medoids[row].tolist() == reference_kmedoids(x[row], k)
        distances = torch.cdist(x[row], x[row])[medoids[row]]
        assert torch.equal(labels[row], distances.argmin(0))  # every token at its nearest


def test_kkz_starts_from_the_largest_norm_then_the_farthest_token():
    x = torch.randn(2, 10, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[0, 6] *= 50  # far the largest norm: the first medoid
    x[1, 2] = x[1].norm(dim=-1).max() * 10 * torch.tensor([1.0, 0, 0], dtype=torch.float64)
    x[1, 8] = -x[1, 2]  # then the token farthest from it
    start = kkz_start(x, pairwise_distances(x), 3)
    assert start[0, 0] == 6 and start[1, 0] == 2 and start[1, 1] == 8
    for row in range(2):  # each next medoid: the farthest from its nearest chosen one, brute force
        for i in range(1, 3):
            chosen = start[row, :i].tolist()
            nearest = [min(float((x[row, t] - x[row, m]).norm()) for m in chosen)
                       for t in range(10)]
            assert start[row, i] == max(range(10), key=lambda t: (nearest[t], -t))


def test_kmedoids_stops_after_max_iters():
    x = torch.randn(2, 60, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for iters in (1, 2):
        medoids, _ = kmedoids(x, 10, max_iters=iters)
        for row in range(2):
            assert medoids[row].tolist() == reference_kmedoids(x[row], 10, max_iters=iters)
    assert not torch.equal(kmedoids(x, 10, max_iters=1)[0], kmedoids(x, 10)[0])


def test_kmedoids_leaves_out_invalid_tokens_as_if_absent():
    x = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    valid = torch.rand(2, 30, generator=torch.Generator().manual_seed(12)) < 0.6
    x[~valid] *= 100  # far away and of large norm: chosen first if they were not left out
    medoids, labels = kmedoids(x, 6, valid=valid)
    for row in range(2):
        kept = valid[row].nonzero().flatten()
        alone, _ = kmedoids(x[row, kept].unsqueeze(0), 6)
        assert medoids[row].tolist() == kept[alone[0]].tolist()
        assert medoids[row].tolist() == reference_kmedoids(x[row], 6, valid=valid[row].tolist())
        assert (labels[row][~valid[row]] == -1).all()


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


def reference_centerclip(visual, frames, mask, layer, segments, clusters):
    """The whole forward in plain loops, one video and one segment at a time (float64): frame
    CLIP up to ``layer``; per segment the mean of its frames' CLS tokens and the brute-force
    medoids of their patch tokens (padding frames left out when the segment's real frames hold
    at least ``clusters`` patch tokens); the remaining blocks on the segment alone; ln_post,
    projection, L2 norm; mean over segments whose last frame is real (else those with a real
    frame), L2 norm."""
    blocks = list(visual.transformer.resblocks)
    out = []
    for video, real in zip(frames, mask.tolist(), strict=True):
        x = embed_images(visual, video)  # (F, 1+P, C), batch-first blocks
        for block in blocks[:layer]:
            x = block(x)
        group, patches = len(real) // segments, x.shape[1] - 1
        embeddings, last, any_real = [], [], []
        for s in range(segments):
            frames_s = list(range(s * group, (s + 1) * group))
            used = [f for f in frames_s if real[f]]
            if len(used) * patches < clusters:
                used = frames_s
            tokens = torch.cat([x[f, 1:] for f in frames_s])
            valid = [f in used for f in frames_s for _ in range(patches)]
            medoids = reference_kmedoids(tokens, clusters, valid=valid)
            seq = torch.cat([torch.stack([x[f, 0] for f in used]).mean(0, keepdim=True),
                             tokens[medoids]]).unsqueeze(0)
            for block in blocks[layer:]:
                seq = block(seq)
            embeddings.append(F.normalize(visual.ln_post(seq[0, 0]) @ visual.proj, dim=-1))
            last.append(real[frames_s[-1]])
            any_real.append(any(real[f] for f in frames_s))
        pooled = last if any(last) else any_real
        chosen = [e for e, p in zip(embeddings, pooled, strict=True) if p]
        out.append(F.normalize(torch.stack(chosen).mean(0), dim=-1))
    return torch.stack(out)


@pytest.mark.slow
@pytest.mark.parametrize("real", [[12, 12], [7, 12], [2, 5], [1, 3]])
def test_centerclip_matches_a_plain_per_segment_reference(tiny_clip, real):
    """Full clips and clips padded at the end (7 real: the partial third segment is dropped, as
    the official last-frame mask does; 2 or 1 real: shorter than a segment)."""
    visual = tiny_clip.double().visual
    encoder = CenterClipVideoEncoder(visual, 12, cluster_layer=3, segments=4, clusters=20).eval()
    frames, _ = video(batch=2, seed=4)
    frames = frames.double()
    mask = torch.arange(12).unsqueeze(0) < torch.tensor(real).unsqueeze(1)
    with torch.no_grad():
        got = F.normalize(encoder(frames, mask), dim=-1)
        expected = reference_centerclip(visual, frames, mask, 3, 4, 20)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


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


def test_a_segment_is_one_cls_token_and_its_medoids(tiny_clip):
    """The official layout (cluster.py 307-310): 1 + K tokens per segment, the first the mean
    of the segment's frame CLS tokens at the clustering block's input."""
    encoder = CenterClipVideoEncoder(tiny_clip.visual, 12, cluster_layer=3, segments=4,
                                     clusters=20).eval()
    seen = {}
    blocks = tiny_clip.visual.transformer.resblocks
    blocks[3].register_forward_pre_hook(lambda m, args: seen.update(into=args[0]))
    blocks[2].register_forward_hook(lambda m, i, o: seen.update(frames=o))
    blocks[-1].register_forward_hook(lambda m, i, o: seen.update(out=o.shape))
    with torch.no_grad():
        encoder(*video(batch=2))
    per_frame = seen["frames"]  # (2 * 12, 37, 64)
    assert seen["into"].shape == seen["out"] == (2 * 4, 1 + 20, 64)
    for b in range(2):
        for s in range(4):
            cls = per_frame[b * 12 + 3 * s: b * 12 + 3 * s + 3, 0].mean(0)
            torch.testing.assert_close(seen["into"][b * 4 + s, 0], cls)
            tokens = per_frame[b * 12 + 3 * s: b * 12 + 3 * s + 3, 1:].reshape(-1, 64)
            medoids = seen["into"][b * 4 + s, 1:]
            matches = (medoids.unsqueeze(1) == tokens.unsqueeze(0)).all(-1).nonzero()[:, 1]
            assert matches.tolist() == sorted(matches.tolist()) and len(matches) == 20


def test_frames_of_one_segment_see_each_other_after_clustering(tiny_clip):
    encoder = CenterClipVideoEncoder(tiny_clip.visual, 12, cluster_layer=3, segments=4,
                                     clusters=36).eval()
    outputs = []
    tiny_clip.visual.transformer.resblocks[-1].register_forward_hook(
        lambda m, i, o: outputs.append(o[:, 0]))  # (4 segments, C) CLS rows
    frames, mask = video(batch=1)
    changed = frames.clone()
    changed[0, 1] += 1.0  # frame 1 is in segment 0
    far = frames.clone()
    far[0, 11] += 1.0  # frame 11 is in segment 3
    with torch.no_grad():
        for clip in (frames, changed, far):
            encoder(clip, mask)
    base, near_out, far_out = outputs
    assert not torch.allclose(near_out[0], base[0], atol=1e-4)
    torch.testing.assert_close(near_out[1:], base[1:])
    torch.testing.assert_close(far_out[:3], base[:3])
    assert not torch.allclose(far_out[3], base[3], atol=1e-4)


@pytest.mark.slow
def test_centerclip_defaults_follow_the_official_script_on_vit_b_32():
    """scripts/msrvtt.sh configuration 80: block 8 (1-based), 4 segments of 49 medoids,
    threshold 1e-6, 100 iterations, full fine-tuning; 200 output tokens."""
    from suite.cost.profiling import output_tokens

    config = registry.get("centerclip").make_config("ViT-B-32", 12, {})
    assert (config.cluster_layer, config.segments, config.clusters, config.max_iters,
            config.threshold, config.rank) == (7, 4, 49, 100, 1e-6, None)
    model = build("centerclip", open_clip.create_model("ViT-B-32"), "ViT-B-32", 12)
    params = sum(p.numel() for p in model.clip.parameters())
    assert sum(p.numel() for p in model.trainable_parameters()) == params - 1  # all but the
    assert output_tokens(model.video_encoder, 12, 224) == 4 * (1 + 49)  # frozen temperature
    lora = build("centerclip", open_clip.create_model("ViT-B-32"), "ViT-B-32", 12, rank=8)
    assert sum(p.numel() for p in lora.trainable_parameters()) == 491_520  # LoRA only


@pytest.mark.slow
def test_centerclip_cost_on_vit_b_32_counts_the_clustering():
    """fvcore's multiply-adds: per frame up to block 7, four 50-token sequences after it, the
    pairwise distances of each segment's 147 patch tokens (the k-medoids rounds are element-wise
    work, not counted, like every method's), and the CLS projection; fvcore adds LayerNorm."""
    from suite.cost.flops import count_macs
    from suite.cost.profiling import dummy_video

    model = build("centerclip", open_clip.create_model("ViT-B-32"), "ViT-B-32", 12).eval()
    count = count_macs(model.video_encoder, dummy_video(1, 12, 224, torch.device("cpu")))
    width, tokens = 768, 50

    def blocks(n_blocks, sequences):  # qkv + out + MLP: 12 w^2 per token; q k^T and a v
        return n_blocks * sequences * (tokens * 12 * width**2 + 2 * tokens**2 * width)

    conv = 12 * 49 * width * 3 * 32 * 32
    cdist = 4 * 147 * 147 * width
    expected = conv + blocks(7, 12) + blocks(5, 4) + cdist + 4 * width * 512
    assert count.by_operator["cdist"] == cdist
    assert count.total - count.by_operator["layer_norm"] == expected  # 38.66 G
    assert 38.69 < count.gmacs < 38.71


def test_centerclip_full_fine_tuning_trains_every_backbone_weight(tiny_clip):
    model = build("centerclip", tiny_clip, "tiny-clip", 12)
    new, pretrained = model.parameter_groups()
    assert new == [] and len(pretrained) == len(list(tiny_clip.parameters())) - 1


@pytest.mark.parametrize("options, fragment", [
    ({"segments": 5}, "does not divide 12 frames; valid: 1, 2, 3, 4, 6, 12"),
    ({"clusters": 200}, "clusters must be within 1..108"),
    ({"cluster_layer": 6}, "valid: 0..5"),
    ({"rank": 0}, "rank must be >= 1 or null"),
    ({"threshold": -1.0}, "threshold must be >= 0"),
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
    model = build(name, tiny_clip, "tiny-clip", 12, rank=8).eval()
    frames, mask = video()
    with torch.no_grad():
        for param_name, p in model.named_parameters():
            if "lora_B" in param_name:
                p.normal_(0, 0.05)
        before = model.encode_video(frames, mask)
        model.fold()
        after = model.encode_video(frames, mask)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)


@pytest.mark.subprocess
def test_a_fresh_process_checks_tiny_clip_options_against_its_real_depth():
    """`suite profile` checks method options before building anything: the embedded tiny-clip
    config must be registered by then (6 blocks), not guessed as a 12-block tower."""
    import subprocess
    import sys

    code = ("from suite.models.method import resolve_method_config\n"
            "from suite.errors import UserError\n"
            "try:\n"
            "    resolve_method_config('centerclip', 'tiny-clip', 12, {'cluster_layer': 7})\n"
            "except UserError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "cluster_layer 7 is outside the backbone; valid: 0..5" in out.stdout


def test_vision_depth_of_an_unknown_backbone_is_an_error():
    from cliptools.towers import vision_depth

    with pytest.raises(ValueError, match="unknown backbone 'ViT-Q-99'"):
        vision_depth("ViT-Q-99")
