import random

import pytest
import torch

from tasks.genome import TEMPLATE_GENOME, render
from tasks.models import baseline_sources, build_from_source, template_source
from tasks.mutations import MUTATIONS
from tools.gate import static_check

# Published torchvision parameter counts at 1000 classes.
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "mobilenetv2": 3_504_872}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return baseline_sources()


@pytest.fixture(scope="module")
def resnets(sources) -> dict[bool, torch.nn.Module]:
    """ResNet-18 built once per form: standard at 1000 classes, adapted at 8."""
    torch.manual_seed(0)
    return {False: build_from_source(sources["resnet18"], 1000, small_input=False).eval(),
            True: build_from_source(sources["resnet18"], 8).eval()}


def test_template_source_is_the_rendered_template():
    assert template_source() == render(TEMPLATE_GENOME), (
        "regenerate with: python -m tasks.genome --write-template")


def test_template_builds_and_runs():
    model = build_from_source(template_source(), 8)
    assert 100_000 <= n_params(model) <= 250_000
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 8)


def test_sources_pass_the_gates_static_check(sources):
    # The product runs these sources through the same gate as designed code
    # (graph.builder seeds the search with them); every mutation of the Template too.
    rng = random.Random(0)
    variants = [TEMPLATE_GENOME] + [m(TEMPLATE_GENOME, rng) for m in MUTATIONS.values()]
    for source in [*sources.values(), template_source(), *map(render, variants)]:
        report = static_check(source)
        assert report.ok, report.message
        assert "def build_model(num_classes: int" in source


def test_static_check_refuses_a_source_that_breaks_the_rules():
    # Keeps the test above meaningful: the same call refuses each kind of violation.
    bad = ("import torch\nfrom torch import nn\nimport os\nfrom torch import hub\n"
           "x = getattr(1, 'a')\ny = (1).__class__\ntorch.load = None\n"
           "def build_model(num_classes: int) -> nn.Module:\n"
           "    return nn.Linear(3, num_classes)\n")
    report = static_check(bad)
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["policy"]
    for line in (3, 4, 5, 6, 7):  # os, torch.hub, getattr, __class__, torch.load = ...
        assert f"line {line}, col" in report.message


def test_resnet18_standard_matches_torchvision(resnets):
    assert n_params(resnets[False]) == TORCHVISION_PARAMS["resnet18"]
    with torch.no_grad():
        assert resnets[False](torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_mobilenetv2_standard_matches_torchvision(sources):
    model = build_from_source(sources["mobilenetv2"], 1000, small_input=False)
    assert n_params(model) == TORCHVISION_PARAMS["mobilenetv2"]


def test_adapted_baselines_build_at_8_classes(sources, resnets):
    torch.manual_seed(0)
    models = {"resnet18": resnets[True],
              "mobilenetv2": build_from_source(sources["mobilenetv2"], 8).eval()}
    # Only the classifier shrinks (and ResNet's lighter stem): 1000 -> 8 classes.
    assert n_params(models["resnet18"]) == 11_689_512 - 992 * 513 - 64 * 3 * (49 - 9)
    assert n_params(models["mobilenetv2"]) == 3_504_872 - 992 * 1281
    for model in models.values():
        with torch.no_grad():
            out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 8) and torch.isfinite(out).all()


def test_adapted_baselines_keep_more_resolution(sources, resnets):
    # The adapted form drops two stride-2 steps: a 32 px input ends at 4x4, not 1x1.
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for small_input, side in ((True, 4), (False, 1)):
            resnet = resnets[small_input]
            assert resnet.layers(resnet.stem(x)).shape[-2:] == (side, side)
            mobilenet = build_from_source(sources["mobilenetv2"], 8, small_input=small_input)
            assert mobilenet.eval().features(x).shape[-2:] == (side, side)


def test_build_from_source_requires_build_model():
    with pytest.raises(ValueError, match="build_model"):
        build_from_source("x = 1\n", 8)
