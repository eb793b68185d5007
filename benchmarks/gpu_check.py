"""CUDA check: every method gives the CPU's maps on a GPU, leaves the model as it was, and costs
about what it costs on a CPU, relative to a forward pass of the same model.

Run on a machine with a CUDA device (the CPU-only CI cannot)::

    python benchmarks/gpu_check.py --output benchmarks/GPU.md

Agreement: torchvision resnet18 (random weights, seed 0), 2 images of 224x224, every method at
``layer4`` on CPU and on CUDA, maps compared (float32; TF32 off). Timing: resnet50, batches of 8
and 64 at 224x224, CUDA events around each call after warm-up, median of ``--repeats`` calls,
interleaved with the plain forward pass (``torch.inference_mode``) that gives the ratio. At
batch 8 an H200 runs resnet50 faster than Python launches its kernels, so that row shows
camlens' fixed per-call work (hooks, restoring the model, the CAM head check, one host sync);
batch 64 shows the cost of the method itself. Peers: Grad-CAM maps at the input's size in
pytorch-grad-cam, torchcam and captum where installed, called as in ``bench_speed.py``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import camlens

AGREEMENT_METHODS = ("cam", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam",
                     "eigencam", "scorecam", "ablationcam", "guided-backprop", "guided-gradcam")


def state_fingerprint(model: torch.nn.Module) -> tuple:
    """What explaining must not change: modes, parameters, buffers, flags, grads, hooks."""
    return (tuple(module.training for module in model.modules()),
            tuple((name, tensor.detach().cpu().clone()) for name, tensor in
                  list(model.named_parameters()) + list(model.named_buffers())),
            tuple(parameter.requires_grad for parameter in model.parameters()),
            tuple(parameter.grad is None for parameter in model.parameters()),
            tuple(len(module._forward_hooks) + len(module._backward_hooks)
                  + len(module._forward_pre_hooks) for module in model.modules()))


def same_state(before: tuple, after: tuple) -> bool:
    flags_equal = before[0] == after[0] and before[2:] == after[2:]
    tensors_equal = all(name_a == name_b and torch.equal(a, b)
                        for (name_a, a), (name_b, b) in zip(before[1], after[1], strict=True))
    return flags_equal and tensors_equal


def agreement() -> list[str]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    images = torch.randn(2, 3, 224, 224)
    lines = ["| method | max abs. difference of maps (CPU vs CUDA) | model unchanged on CUDA |",
             "|---|---:|---|"]
    for method in AGREEMENT_METHODS:
        options = {"batch_size": 64} if method in ("scorecam", "ablationcam") else {}
        on_cpu = camlens.explain(model, images, method=method, layer="layer4", target=3,
                                 **options).maps
        model.cuda()
        before = state_fingerprint(model)
        on_gpu = camlens.explain(model, images.cuda(), method=method, layer="layer4", target=3,
                                 **options)
        unchanged = same_state(before, state_fingerprint(model))
        assert on_gpu.maps.device.type == "cuda", method
        difference = (on_gpu.maps.cpu() - on_cpu).abs().max().item()
        model.cpu()
        lines.append(f"| {method} | {difference:.2e} | {'yes' if unchanged else 'NO'} |")
    return lines


def cuda_ms(work: Callable[[], object]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    work()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def ratio_table(cases: dict[str, Callable[[], object]], forward: Callable[[], object],
                repeats: int) -> list[str]:
    """Median CUDA time of each case and of the forward pass, timed alternately."""
    lines = ["| call | ms | forward ms | ratio to forward |", "|---|---:|---:|---:|"]
    for name, work in cases.items():
        for _ in range(3):
            work(), forward()
        own, base = [], []
        for _ in range(repeats):
            base.append(cuda_ms(forward))
            own.append(cuda_ms(work))
        own_ms, base_ms = statistics.median(own), statistics.median(base)
        lines.append(f"| {name} | {own_ms:.2f} | {base_ms:.2f} | {own_ms / base_ms:.2f}x |")
    return lines


def resnet50_batch(batch: int) -> tuple[torch.nn.Module, torch.Tensor, Callable[[], object]]:
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().cuda()
    images = torch.randn(batch, 3, 224, 224, device="cuda")

    def forward() -> object:
        with torch.inference_mode():
            return model(images)

    return model, images, forward


def timing(repeats: int, batch: int) -> list[str]:
    model, images, forward = resnet50_batch(batch)
    cases = {
        "gradcam, top-1": lambda: camlens.explain(model, images, method="gradcam",
                                                  layer="layer4").raw,
        "gradcam, TopK(3)": lambda: camlens.explain(model, images, method="gradcam",
                                                    layer="layer4", target=camlens.TopK(3)).raw,
        "cam, all 1000 classes (raw maps)": lambda: camlens.explain(
            model, images, method="cam", layer="layer4", target="all").raw,
        "gradcam++, top-1": lambda: camlens.explain(model, images, method="gradcam++",
                                                    layer="layer4").raw,
        "ablationcam, top-1 (2048 channels)": lambda: camlens.explain(
            model, images, method="ablationcam", layer="layer4", batch_size=256).raw,
    }
    return [f"resnet50, batch {batch}, 224x224, {torch.cuda.get_device_name()}, torch "
            f"{torch.__version__}, median of {repeats} calls; camlens' raw maps at layer4.", "",
            *ratio_table(cases, forward, repeats)]


def peer_timing(repeats: int, batch: int) -> list[str]:
    """Grad-CAM maps at the input's size, top-1 class, in camlens and in the peers that are
    installed (their calls as in benchmarks/bench_speed.py)."""
    import bench_speed

    model, images, forward = resnet50_batch(batch)
    cases = {"camlens": lambda: camlens.explain(model, images, method="gradcam",
                                                layer="layer4").maps}
    missing = []
    for label, make in (("grad-cam (pytorch_grad_cam)", bench_speed.peer_gradcam_pytorch_grad_cam),
                        ("torchcam", bench_speed.peer_gradcam_torchcam),
                        ("captum", bench_speed.peer_gradcam_captum)):
        try:
            cases[label] = make(model, images)
        except ImportError:
            missing.append(label)
    lines = [f"Grad-CAM maps at 224x224, resnet50, batch {batch}, median of {repeats} calls.", "",
             *ratio_table(cases, forward, repeats)]
    if missing:
        lines += ["", "Not installed: " + ", ".join(missing) + "."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = ["# camlens on a GPU", "", "Command: `python benchmarks/gpu_check.py --output "
              "benchmarks/GPU.md`.", "", "## CPU and CUDA agree", "", *agreement(), "",
              "## Cost relative to a forward pass", ""]
    for batch in (8, 64):
        report += [*timing(args.repeats, batch), ""]
    report += ["## Against the peers", ""]
    for batch in (8, 64):
        report += [*peer_timing(args.repeats, batch), ""]
    text = "\n".join(report) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
