"""Methods from other distributions (entry points ``tvr_suite.methods``), the light listing of
methods that imports neither torch nor them, and dataset cards from ``SUITE_CARDS_PATH``.

A plug-in here is a real distribution written into ``tmp_path``, outside the repository: a
package and a ``*.dist-info`` folder whose ``entry_points.txt`` importlib.metadata reads once
``tmp_path`` is on the path. Nothing is mocked."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from methods import registry
from suite.data import cards
from suite.errors import DuplicateMethodError, MethodError, UserError

PLUGIN_METHOD = '''
"""A plug-in method: frozen CLIP frames, mean-pooled, then one trainable linear layer."""

from dataclasses import dataclass

from torch import nn

from methods.base import MeanPoolVideoEncoder, RetrievalModel, backbone_parameter_ids
from methods.registry import Method


@dataclass(frozen=True)
class LinearHeadConfig:
    """No knobs."""


class LinearHead(MeanPoolVideoEncoder):
    """Mean pooling, then a linear layer that starts as the identity."""

    def __init__(self, visual):
        super().__init__(visual)
        self.head = nn.Linear(visual.output_dim, visual.output_dim)
        nn.init.eye_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, frames, mask):
        return self.head(super().forward(frames, mask))


def build(clip, config, frames, backbone):
    ids = backbone_parameter_ids(clip)
    clip.requires_grad_(False)
    return RetrievalModel(clip, LinearHead(clip.visual), ids)


METHOD = Method(
    name={name!r},
    description="Frozen CLIP, mean-pooled frames, one trainable linear layer",
    reference="A test plug-in " + "(tests/test_plugins.py)",
    config_cls=LinearHeadConfig,
    build=build,
)
'''


def write_plugin(root: Path, package: str, entry_points: dict[str, str],
                 module: str | None = None) -> Path:
    """A distribution ``package`` 0.1 in ``root``: the package (with ``module`` as
    ``package/method.py`` if given) and its dist-info declaring ``entry_points``."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    if module is not None:
        (root / package / "method.py").write_text(module)
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[tvr_suite.methods]\n" + "\n".join(lines) + "\n")
    return root


def plugin_env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}


def suite(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``suite ARGS`` in a new process, in ``root``, with ``root`` on PYTHONPATH."""
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], cwd=root,
                          env=plugin_env(root), capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The one line a command that failed with exit code 2 printed."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    return lines[0]


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    """``tmp_path`` on sys.path for this test; the plug-ins imported and the methods
    registered meanwhile are forgotten after it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_registry", {})  # as in a fresh process
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_installed_plugin_runs_end_to_end_and_is_listed(tmp_path):
    module = PLUGIN_METHOD.format(name="my-method")
    write_plugin(tmp_path, "my_tvr_method", {"my-method": "my_tvr_method.method:METHOD"}, module)
    # --pretrained none: pre-training the tiny CLIP into this session's cache takes minutes
    done = suite(tmp_path, "run", "--method", "my-method", "--dataset", "synthetic",
                 "--epochs", "1", "--pretrained", "none", "--set", "data.num_train=64",
                 "--set", "data.num_val=16", "--set", "data.num_test=32")
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(line.startswith("run ") and "test t2v R@1" in line
               for line in done.stdout.splitlines()), done.stdout
    listed = suite(tmp_path, "list", "methods", timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    line = next(x for x in listed.stdout.splitlines() if x.split()[:1] == ["my-method"])
    assert "one trainable linear layer" in line
    assert "lora" in listed.stdout


@pytest.mark.subprocess
def test_describe_reads_literals_without_importing_torch_or_methods(tmp_path):
    module = PLUGIN_METHOD.format(name="my-method")
    write_plugin(tmp_path, "my_tvr_method", {"my-method": "my_tvr_method.method"}, module)
    code = ("import sys, time; t = time.perf_counter(); "
            "from methods.registry import describe; infos = describe(); "
            "print(round(time.perf_counter() - t, 3)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'open_clip', 'my_tvr_method', 'methods'))); "
            "print([(i.name, i.reference) for i in infos if i.name == 'my-method'])")
    done = subprocess.run([sys.executable, "-c", code], env=plugin_env(tmp_path),
                          capture_output=True, text=True, check=True, timeout=120)
    seconds, imported, mine = done.stdout.splitlines()
    # find_spec imports the plug-in's (empty) parent package, never its method module
    assert imported == "['methods', 'methods.registry', 'my_tvr_method']"
    assert mine == "[('my-method', 'A test plug-in (tests/test_plugins.py)')]"
    assert float(seconds) < 1.0


def test_builtins_are_the_modules_that_define_method():
    infos = {info.name: info for info in registry.describe()}
    assert {"zeroshot", "full", "lora", "tempme", "tempme-full"} <= set(infos)
    assert not {"base", "registry"} & set(infos)
    assert infos["tempme-full"].source == "built-in module methods.tempme_full"
    assert infos["lora"].description == registry.get("lora").description
    assert set(registry.discover()) == set(infos)


def test_describe_imports_a_method_whose_description_is_not_a_literal(on_path):
    module = PLUGIN_METHOD.format(name="computed").replace(
        'description="Frozen CLIP', 'description=" ".join(["Frozen", "CLIP"]) + "')
    write_plugin(on_path, "computed_method", {"computed": "computed_method.method:METHOD"},
                 module)
    info = next(i for i in registry.describe() if i.name == "computed")
    assert info.description.startswith("Frozen CLIP, mean-pooled")
    assert "computed_method.method" in sys.modules
    assert info.source == "plug-in computed_method.method:METHOD of distribution " \
                          "computed_method 0.1"


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_plugin_that_clashes_with_a_builtin_is_refused_naming_both(on_path):
    write_plugin(on_path, "clash_method", {"lora": "clash_method.method:METHOD"},
                 PLUGIN_METHOD.format(name="lora"))
    for call in (registry.discover, registry.describe, lambda: registry.get("lora")):
        with pytest.raises(DuplicateMethodError, match="built-in module methods.lora and by "
                                                       "plug-in clash_method.method:METHOD"):
            call()
    assert registry.get("zeroshot").name == "zeroshot"  # other names still work
    line = one_line_error(suite(on_path, "run", "--method", "lora", timeout=120))
    assert "declared twice" in line and "clash_method 0.1" in line


def test_two_plugins_with_one_name_are_refused(on_path):
    for package in ("first_method", "second_method"):
        write_plugin(on_path / package, package, {"twin": f"{package}.method:METHOD"},
                     PLUGIN_METHOD.format(name="twin"))
        sys.path.insert(0, str(on_path / package))
    try:
        with pytest.raises(DuplicateMethodError, match="'twin' is declared twice") as error:
            registry.get("twin")
        assert "first_method 0.1" in str(error.value)
        assert "second_method 0.1" in str(error.value)
    finally:
        sys.path[:] = [p for p in sys.path if not p.startswith(str(on_path))]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_broken_plugin_is_one_line_when_asked_for(on_path):
    broken = "import no_such_module_for_tvr_suite\n" + PLUGIN_METHOD.format(name="broken")
    write_plugin(on_path, "broken_method", {"broken": "broken_method.method:METHOD",
                                            "missing": "no_such_package.method:METHOD"}, broken)
    with pytest.raises(MethodError, match="method 'broken' \\(distribution broken_method 0.1\\) "
                                          "failed to import: ModuleNotFoundError"):
        registry.get("broken")
    assert registry.get("lora").name == "lora"  # the others are unharmed
    line = one_line_error(suite(on_path, "run", "--method", "broken", timeout=120))
    assert "broken_method 0.1" in line and "no_such_module_for_tvr_suite" in line
    # The listing reads sources: a module that cannot be found at all fails it.
    with pytest.raises(MethodError, match="'missing' \\(distribution broken_method 0.1\\)"):
        registry.describe()


def test_register_refuses_a_name_a_module_declares():
    lora = registry.get("lora")
    clash = registry.Method(name="zeroshot", description="", reference="",
                            config_cls=lora.config_cls, build=lora.build)
    with pytest.raises(DuplicateMethodError, match="methods.zeroshot"):
        registry.register(clash)


CARD = textwrap.dedent('''\
    name = "{name}"
    description = "A card from elsewhere"
    loader = "synthetic"
    caption_mode = "multi"
    frames = 12
    words = 32
    backbone = "tiny-clip"
    pretrained = "synthetic"
    source = "generated"
    ''')


@pytest.mark.subprocess
def test_cards_from_suite_cards_path(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "elsewhere.toml").write_text(CARD.format(name="elsewhere"))
    monkeypatch.setenv("SUITE_CARDS_PATH", os.pathsep.join([str(first), str(second)]))
    assert {"elsewhere", "synthetic"} <= set(cards.available())
    assert cards.load_card("elsewhere").description == "A card from elsewhere"
    assert cards.search_path()[-1] == cards.cards_dir()
    listed = suite(tmp_path, "list", "datasets", timeout=120)  # the variable set above
    assert listed.returncode == 0 and "A card from elsewhere" in listed.stdout, listed.stderr

    (second / "elsewhere.toml").write_text(CARD.format(name="elsewhere"))
    (second / "synthetic.toml").write_text(CARD.format(name="synthetic"))
    for call in (cards.available, lambda: cards.load_card("elsewhere")):
        with pytest.raises(UserError, match=f"'elsewhere' is defined twice, in {first}"):
            call()
    with pytest.raises(UserError, match=f"in {second / 'synthetic.toml'} and "
                                        f"{cards.cards_dir() / 'synthetic.toml'}"):
        cards.load_card("synthetic")
    assert cards.load_card("msrvtt").name == "msrvtt"  # other cards still load
    assert "defined twice" in one_line_error(suite(tmp_path, "list", "datasets", timeout=120))

    monkeypatch.setenv("SUITE_CARDS_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="SUITE_CARDS_PATH names .*nowhere, which is not a folder"):
        cards.available()
