"""CenterCLIP's clustering against the official code's own outputs.

tests/fixtures/centerclip_official.json was made once by tests/fixtures/centerclip_official.py,
which runs mzhaoshuai/CenterCLIP at commit cfce7590806aa3255b50cea86a5d8a7d02fff338
(``modules/cluster``: ``batch_fast_kmedoids_with_split``, ``KKZ_init``, ``TokenClusterInter``)
on fixed float64 inputs with the settings of ``scripts/msrvtt.sh``; how, and why its
``torch.cdist`` takes the direct path, is said there. No official code is in this repository.
"""

import json
from pathlib import Path

import pytest
import torch

from methods.centerclip import cluster_segments, kkz_start, kmedoids, pairwise_distances

FIXTURE_FILE = Path(__file__).parents[1] / "fixtures" / "centerclip_official.json"
FIXTURE = json.loads(FIXTURE_FILE.read_text())


def _names(section):
    return [case["name"] for case in FIXTURE[section]]


def test_the_fixture_names_its_source():
    assert FIXTURE["repository"] == "mzhaoshuai/CenterCLIP"
    assert FIXTURE["commit"] == "cfce7590806aa3255b50cea86a5d8a7d02fff338"


@pytest.mark.parametrize("case", FIXTURE["kkz"], ids=_names("kkz"))
def test_kkz_start_matches_the_official_kkz_init(case):
    x = torch.tensor(next(c["x"] for c in FIXTURE["kmedoids"] if c["name"] == case["name"]),
                     dtype=torch.float64)
    start = kkz_start(x, pairwise_distances(x), case["k"])
    assert start.tolist() == case["start"]


@pytest.mark.parametrize("case", FIXTURE["kmedoids"], ids=_names("kmedoids"))
def test_kmedoids_matches_the_official_batch_fast_kmedoids(case):
    x = torch.tensor(case["x"], dtype=torch.float64)
    medoids, labels = kmedoids(x, case["k"], max_iters=100, threshold=1e-6)
    assert medoids.tolist() == case["medoids"]
    assert labels.tolist() == case["labels"]


@pytest.mark.parametrize("case", FIXTURE["cluster_layer"],
                         ids=lambda c: f"{c['videos']}x{c['frames']}f-{c['segments']}s")
def test_segment_sequences_match_the_official_token_cluster_layer(case):
    """The same medoid tokens in the same order, and the same segment CLS token (the mean of the
    segment's frame CLS tokens), as ``TokenClusterInter.forward``."""
    x = torch.tensor(case["x_lnd"], dtype=torch.float64).permute(1, 0, 2)  # (B*F, 1+P, C)
    group = case["frames"] // case["segments"]
    out = cluster_segments(x, group, case["clusters"], max_iters=100, threshold=1e-6)
    width = x.shape[-1]
    tokens = x.reshape(-1, group, x.shape[1], width)[:, :, 1:].reshape(out.shape[0], -1, width)
    expected = tokens.gather(1, torch.tensor(case["medoids"]).unsqueeze(-1).expand(-1, -1, width))
    assert out.shape == (case["videos"] * case["segments"], 1 + case["clusters"], width)
    assert torch.equal(out[:, 1:], expected)
    torch.testing.assert_close(out[:, 0], torch.tensor(case["cls"], dtype=torch.float64),
                               rtol=0, atol=1e-15)
