"""The package's shape: layers, old import paths, the engine alone on `import camlens`."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import camlens
from camlens._moved import MOVED_MODULES

ROOT = Path(__file__).resolve().parents[1]


def test_import_camlens_loads_the_engine_alone():
    code = ("import sys, camlens\n"
            "print(sorted(m for m in sys.modules if m.startswith('camlens')))\n"
            "print(sorted(m for m in ('matplotlib', 'PIL', 'sklearn', 'click', 'soundfile', "
            "'safetensors', 'scipy') if m in sys.modules))")
    loaded, optional = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                      text=True, check=True).stdout.splitlines()
    modules = eval(loaded)  # noqa: S307 - our own subprocess's repr of a list of names
    above = ("camlens.audio", "camlens.audit", "camlens.captioning", "camlens.cli",
             "camlens.data", "camlens.experiments", "camlens.io", "camlens.metrics",
             "camlens.models", "camlens.viz", "camlens.zoo")
    assert not [name for name in modules if name.startswith(above)], modules
    assert optional == "[]"


def test_sub_packages_are_attributes_on_first_use():
    assert camlens.zoo.get_weights("digits-gap").name == "digits-gap"
    assert callable(camlens.metrics.pointing_game)
    with pytest.raises(AttributeError, match="no attribute 'zooo'"):
        camlens.zooo  # noqa: B018


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_old_module_paths_warn_and_give_the_new_module(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_old_names_inside_modules_warn_and_work():
    from camlens.io.audio import load_audio

    with pytest.warns(DeprecationWarning, match=r"camlens\.io\.audio"):
        from camlens.data.speech import load_audio as old_load_audio
    assert old_load_audio is load_audio
    with pytest.raises(ImportError):
        from camlens.data.speech import collate  # noqa: F401 - removed: it was unused


def test_camlens_audit_is_still_callable_with_a_deprecation(gap_net):
    images = torch.randn(3, 3, 6, 6)
    data = [{"image": image, "label": 0, "box": torch.tensor([0, 0, 3, 3])} for image in images]
    from camlens.audit import audit

    expected = audit(gap_net, data, {"object": "box"}, layer="features")
    with pytest.warns(DeprecationWarning, match=r"camlens\.audit\.audit"):
        result = camlens.audit(gap_net, data, {"object": "box"}, layer="features")
    torch.testing.assert_close(result.shares, expected.shares)


def test_the_layers_contract_holds_and_catches_an_upward_import(tmp_path):
    """`lint-imports` (run by make test) keeps the layers; a module of the engine that imports
    the zoo breaks it."""
    lint = Path(sys.executable).with_name("lint-imports")
    kept = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert kept.returncode == 0, kept.stdout[-2000:]
    tree = tmp_path / "src"
    subprocess.run(["cp", "-r", str(ROOT / "src"), str(tree)], check=True)
    (tree / "camlens" / "capture.py").write_text(
        (tree / "camlens" / "capture.py").read_text() + "\nfrom camlens.zoo import load\n")
    broken = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")],
                            cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    assert broken.returncode != 0
    assert "camlens.capture -> camlens.zoo" in broken.stdout


def test_predicted_classes_restores_every_modules_flag():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model[1].eval()  # a mixed state that a single train(was_training) would flatten
    flags = [module.training for module in model.modules()]
    classes = camlens.targets.predicted_classes(model, torch.randn(5, 4), batch_size=2)
    assert classes.shape == (5,) and classes.dtype == torch.long
    assert [module.training for module in model.modules()] == flags
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.eval()
        expected = model(torch.ones(2, 4)).argmax(dim=1)
    torch.testing.assert_close(camlens.targets.predicted_classes(model, torch.ones(2, 4)),
                               expected)


def test_the_import_graph_has_no_circle_and_no_upward_arrow():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "upward arrows (against the layers of pyproject.toml): 0" in result.stdout
    assert "circles: 0" in result.stdout


@pytest.mark.parametrize(("module", "name", "new_home"), [
    ("camlens.capture", "choose_layer", "camlens.layer_choice.choose_layer"),
    ("camlens.capture", "has_spatial_axis", "camlens.layouts.detect_layout"),
    ("camlens.audio.relevance", "attention_weights", "method='attention'"),
])
def test_replaced_names_say_what_replaced_them(module, name, new_home):
    with pytest.raises(AttributeError, match=new_home.replace(".", r"\.").replace("(", r"\(")):
        getattr(importlib.import_module(module), name)


def test_test_modules_have_unique_names():
    # The test folders are not packages: pytest imports each test module by its file name, so
    # two files of one name make the whole run fail at collection.
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
