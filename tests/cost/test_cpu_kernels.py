"""suite.cost.cpu: the oneDNN GEMM route gives torch's results (float64 reference) for every
operator it takes over, forward and backward, declines what it does not handle, and is chosen
from the measured peaks; denormal flushing reaches every thread; freed memory is reused."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from methods import registry
from suite.cost import cpu
from suite.cost.peak import Peaks
from suite.errors import UserError

pytestmark = pytest.mark.skipif(not cpu.onednn_available(), reason="torch built without oneDNN")


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def handled(func, monkeypatch):
    """Count the calls a handler of ``func`` answered (not declined)."""
    calls = []
    original = cpu.HANDLERS[func]

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setitem(cpu.HANDLERS, func, counting)
    return calls


CASES = {
    "linear 2-D": lambda x, w, b: F.linear(x[0], w, b),
    "linear 3-D": lambda x, w, b: F.linear(x, w, b),
    "linear, transposed input": lambda x, w, b: F.linear(x.transpose(0, 1), w, b),
    "linear, no bias": lambda x, w, b: F.linear(x, w),
    "matmul": lambda x, w, b: x[1] @ w.t(),
}


@pytest.mark.parametrize("case", CASES)
def test_products_equal_torch_in_float64(case, monkeypatch):
    aten = torch.ops.aten
    calls = [handled(f, monkeypatch) for f in (aten.mm.default, aten.addmm.default,
                                               aten.bmm.default)]
    x, w, b = rand(3, 300, 96, seed=1), rand(40, 96, seed=2), rand(40, seed=3)
    op = CASES[case]
    expected = op(x.double(), w.double(), b.double())
    default = op(x, w, b)
    with cpu.OneDnnRoute():
        got = op(x, w, b)
    assert sum(c.count(True) for c in calls) == 1  # one product, taken over
    assert got.shape == default.shape and got.stride() == default.stride()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-5)


def test_patch_embedding_convolution_is_a_product_over_patches(monkeypatch):
    calls = handled(torch.ops.aten.convolution.default, monkeypatch)
    conv = torch.nn.Conv2d(3, 16, 8, stride=8)
    images = rand(2, 3, 35, 33)  # not a multiple of the patch: the rest is left out, as conv
    with torch.no_grad():
        expected = F.conv2d(images.double(), conv.weight.double(), conv.bias.double(), stride=8)
        with cpu.OneDnnRoute():
            got = conv(images)
            padded = F.conv2d(images, conv.weight, padding=1)  # not a patch embedding
    assert calls == [True, False]
    assert got.shape == expected.shape == (2, 16, 4, 4) and got.is_contiguous()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(padded, F.conv2d(images, conv.weight, padding=1))  # declined: torch's


def test_attention_fast_path_equals_torch(monkeypatch):
    calls = handled(torch.ops.aten._native_multi_head_attention.default, monkeypatch)
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = rand(3, 20, 64)
    with torch.no_grad():
        expected = mha(x, x, x, need_weights=False)[0]
        with cpu.OneDnnRoute():
            got = mha(x, x, x, need_weights=False)[0]
            with_weights = mha(x, x, x)[0]  # needs the weights: declined
    assert calls == [True, False]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(with_weights, expected, rtol=0, atol=1e-5)


def test_gradients_through_the_route_equal_torch(monkeypatch):
    calls = handled(torch.ops.aten.mm.default, monkeypatch)
    w = rand(40, 96, seed=4).requires_grad_()
    x = rand(5, 30, 96, seed=5).requires_grad_()

    def grads(dtype):
        out = F.linear(x.to(dtype).transpose(0, 1), w.to(dtype)).tanh().sum()
        return torch.autograd.grad(out, [w, x])

    expected = grads(torch.float64)  # the gradients are float32 (the leaves'), from float64
    with cpu.OneDnnRoute():
        got = grads(torch.float32)
    assert calls.count(True) == 3  # the forward product and both of the backward
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.double(), e.double(), rtol=0, atol=1e-4)


def test_other_dtypes_are_left_to_torch():
    x, w = rand(8, 16).bfloat16(), rand(4, 16).bfloat16()
    with cpu.OneDnnRoute():
        got = F.linear(x, w)
    assert torch.equal(got, F.linear(x, w))


@pytest.mark.parametrize("method", ["lora", "tempme"])
def test_folded_encoders_through_the_route_equal_the_default(tiny_clip, method):
    spec = registry.get(method)
    model = spec.build(tiny_clip, spec.make_config("tiny-clip", 4, {}), 4, "tiny-clip")
    model.fold().eval()
    frames, mask = rand(2, 4, 3, 48, 48, seed=6), torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        expected = model.encode_video(frames, mask)
        with cpu.kernels(torch.device("cpu"), route="onednn") as route:
            got = model.encode_video(frames, mask)
    assert route == "onednn"
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def fake_peaks(torch_rate, onednn_rate, bf16=1e11):
    return Peaks("test cpu", 2, torch.__version__,
                 {"fp32/torch": torch_rate, "fp32/onednn": onednn_rate, "bf16": bf16})


@pytest.mark.parametrize(("setting", "torch_rate", "onednn_rate", "route"), [
    ("auto", 1e11, 2.3e11, "onednn"),  # AVX-512 AMD: MKL runs AVX2 code
    ("auto", 4e11, 4.1e11, "torch"),  # within the margin: the default stays
    ("torch", 1e11, 2.3e11, "torch"),
    ("onednn", 4e11, 1e11, "onednn"),
])
def test_the_route_follows_the_setting_and_the_measured_peaks(monkeypatch, setting, torch_rate,
                                                              onednn_rate, route):
    import suite.cost.peak

    monkeypatch.setenv("SUITE_CPU_GEMM", setting)
    monkeypatch.setattr(suite.cost.peak, "machine_peaks",
                        lambda device: fake_peaks(torch_rate, onednn_rate))
    assert cpu.gemm_route(torch.device("cpu")) == route
    assert cpu.settings(torch.device("cpu"))["cpu_gemm"] == route
    with cpu.kernels(torch.device("cpu")) as taken:
        assert taken == route


def test_auto_keeps_torchs_route_for_narrow_models(monkeypatch, tiny_clip):
    """Below ONEDNN_MIN_WIDTH the route's per-operator cost outweighs its faster products."""
    import suite.cost.peak

    monkeypatch.setenv("SUITE_CPU_GEMM", "auto")
    monkeypatch.setattr(suite.cost.peak, "machine_peaks", lambda device: fake_peaks(1e11, 2.3e11))
    wide = torch.nn.Sequential(torch.nn.Linear(cpu.ONEDNN_MIN_WIDTH, 8))
    assert cpu.widest_layer(tiny_clip) == 8 * 8 * 3  # the patch embedding: 3 x 8 x 8
    assert cpu.gemm_route(torch.device("cpu"), tiny_clip) == "torch"
    assert cpu.gemm_route(torch.device("cpu"), wide) == "onednn"
    monkeypatch.setenv("SUITE_CPU_GEMM", "onednn")
    assert cpu.gemm_route(torch.device("cpu"), tiny_clip) == "onednn"  # forced


@pytest.mark.parametrize(("name", "value"), [("SUITE_CPU_GEMM", "mkl"),
                                             ("SUITE_FLUSH_DENORMAL", "yes"),
                                             ("SUITE_REUSE_MEMORY", "2")])
def test_bad_settings_are_user_errors(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=f"{name}="):
        cpu.configure_process() if name != "SUITE_CPU_GEMM" else cpu.gemm_route(
            torch.device("cpu"))


FLUSH_PROBE = """
import json, resource, torch
from suite.cost import cpu
cpu.configure_process()
torch.set_num_threads(2)
x = torch.full((4_000_000,), 1e-39)  # denormal
flushed = ((x * 1.0) == 0).float().mean().item()  # both threads' halves
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.ones(16 * 2**20)  # 64 MiB, allocated and freed each time
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"flushed": flushed, "faults": faults[-1]}))
"""


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("switch", ["1", "0"])
def test_denormals_flush_on_every_thread_and_freed_memory_is_reused(switch):
    """In fresh processes: configured before the thread pool starts, flush-to-zero reaches the
    worker threads too; kept memory is not faulted in again."""
    env = {"SUITE_FLUSH_DENORMAL": switch, "SUITE_REUSE_MEMORY": switch, "PATH": ""}
    out = subprocess.run([sys.executable, "-c", FLUSH_PROBE], capture_output=True, text=True,
                         check=True, env=env)
    result = json.loads(out.stdout)
    if switch == "1":
        assert result["flushed"] == 1.0
        # 64 MiB is 16,384 pages; the kept block is reused once the heap has settled, which took
        # up to 3 more rounds in 16 fresh processes here (address layout varies), so 12 rounds
        assert result["faults"] < 1000
    else:
        assert result["flushed"] == 0.0
        assert result["faults"] >= 16_000
