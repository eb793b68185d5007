"""How camlens' maps agree with pytorch-grad-cam's where both implement a method or an option.

For each case, both libraries explain the same images of the same model for the same class, and
the table gives, per image, the Pearson correlation of the two normalised maps at input
resolution and their largest difference. Where they differ the reason is stated (and tested in
tests/test_peer_agreement.py when grad-cam is installed).

    python benchmarks/compare_peers.py --output benchmarks/PEERS.md

Model: torchvision's resnet18 with random weights and randomised batch-norm statistics (so
biases and running statistics are not trivial), 4 images of 64x64, class 1, layer3.
"""

from __future__ import annotations

import argparse
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

import camlens

__all__ = ["CASES", "Agreement", "agreements", "make_model"]


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model


@dataclass
class Case:
    name: str
    ours: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    theirs: Callable[[torch.nn.Module, torch.Tensor], np.ndarray]
    difference: str = ""


def _pgc(cls_name: str, layers: Callable[[torch.nn.Module], list], target: str = "logit",
         **call: object) -> Callable[[torch.nn.Module, torch.Tensor], np.ndarray]:
    def run(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import (
            ClassifierOutputReST,
            ClassifierOutputTarget,
        )

        make = ClassifierOutputReST if target == "rest" else ClassifierOutputTarget
        targets = None if target == "none" else [make(1)] * len(images)
        with getattr(pytorch_grad_cam, cls_name)(model=model, target_layers=layers(model)) as cam:
            return cam(input_tensor=images, targets=targets, **call)

    return run


def _ours(method: str, layer: str | list[str] | None = "layer3", target: int | None = 1,
          **options: object) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
    def run(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return camlens.explain(model, images, method, layer=layer, target=target, **options).maps

    return run


def layer3(model: torch.nn.Module) -> list:
    return [model.layer3]


CASES = (
    Case("gradcam", _ours("gradcam"), _pgc("GradCAM", layer3)),
    Case("gradcam eigen_smooth", _ours("gradcam", eigen_smooth=True),
         _pgc("GradCAM", layer3, eigen_smooth=True),
         "the sign of the principal component: pytorch-grad-cam keeps the SVD's arbitrary sign "
         "(an image where it points against the evidence gets the complementary map); camlens "
         "takes the sign that agrees with the plain sum of the terms"),
    Case("eigengradcam", _ours("eigengradcam"), _pgc("EigenGradCAM", layer3),
         "the same sign choice as eigen_smooth"),
    Case("gradcam aug_smooth", _ours("gradcam", aug_smooth=True),
         _pgc("GradCAM", layer3, aug_smooth=True),
         "pytorch-grad-cam averages the six maps after normalising each to [0, 1]; camlens "
         "averages them in the units of the score (a stronger augmentation weighs more), then "
         "normalises"),
    Case("shapleycam (ReST)", _ours("shapleycam"), _pgc("ShapleyCAM", layer3, target="rest")),
    Case("finercam", _ours("finercam", target=None), _pgc("FinerCAM", layer3, target="none")),
    Case("fullgrad", _ours("fullgrad", layer=None), _pgc("FullGrad", lambda model: []),
         "post-processing: the official implementation (followed here) rescales each input's "
         "bias-gradient map to [0, 1] over all its channels; pytorch-grad-cam rescales each "
         "channel separately"),
    Case("layercam layer=[layer2, layer3, layer4]",
         _ours("layercam", layer=["layer2", "layer3", "layer4"], fuse="mean"),
         _pgc("LayerCAM", lambda model: [model.layer2, model.layer3, model.layer4]),
         "both average the layers' maps after scaling them to [0, 1]: pytorch-grad-cam min-max "
         "normalises at input resolution, camlens divides by the maximum on the finest grid"),
)


@dataclass
class Agreement:
    name: str
    correlations: list[float]
    max_difference: float
    difference: str


def agreements(images: torch.Tensor | None = None) -> list[Agreement]:
    """Every case of :data:`CASES` on ``images`` (default: 4 seeded 64x64 images)."""
    model = make_model()
    if images is None:
        images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rows = []
    for case in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = case.ours(model, images).detach().numpy()
            theirs = np.asarray(case.theirs(model, images))
        model.zero_grad(set_to_none=True)  # pytorch-grad-cam's backward fills parameter grads
        correlations = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
                        for a, b in zip(ours, theirs, strict=True)]
        rows.append(Agreement(case.name, correlations, float(np.abs(ours - theirs).max()),
                              case.difference))
    return rows


def report(rows: list[Agreement]) -> str:
    from importlib.metadata import version as installed_version

    version = installed_version("grad-cam")
    lines = [
        "# camlens against pytorch-grad-cam",
        "",
        "`python benchmarks/compare_peers.py --output benchmarks/PEERS.md`: torchvision resnet18, "
        "random weights and batch-norm statistics, 4 images of 64x64, class 1, layer3; "
        f"pytorch-grad-cam {version}, torch {torch.__version__}, {platform.machine()}.",
        "",
        "| method or option | correlation per image | largest difference | why they differ |",
        "|---|---|---:|---|",
    ]
    for row in rows:
        cells = ", ".join(f"{value:.4f}" for value in row.correlations)
        lines.append(f"| {row.name} | {cells} | {row.max_difference:.2g} | "
                     f"{row.difference or 'they agree'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="also write the markdown to this file")
    args = parser.parse_args()
    text = report(agreements())
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
