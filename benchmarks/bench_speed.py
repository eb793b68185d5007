"""How fast is camlens next to a plain inference forward pass, and next to its peers?

Prints a markdown table, measured in one run on one machine (CPU, torchvision models with random
weights, nothing downloaded):

1. Grad-CAM, resnet50, layer4, batch 8, 224x224, top-1 class, upsampled maps included
   (``exp.maps``): time against a ``torch.inference_mode()`` forward of the same model and batch.
   Peers doing the same work where installed: grad-cam (``pytorch_grad_cam``), torchcam, captum.
2. Grad-CAM with three targets per input (``camlens.TopK(3)``) against the one-target call.
3. CAM for all 1000 classes at once (``target="all"``) against the forward: raw maps only, and
   with ``exp.maps`` materialised (8000 maps at 224x224, 1.6 GB of float32).
4. Ablation-CAM, resnet18, layer4, batch 1, against resnet18's forward; peer: grad-cam.
5. Score-CAM, resnet18, layer4, batch 1, ``batch_size`` 16, 64 and 256: time and peak memory.
   Each configuration runs in a fresh subprocess that reports its peak resident memory
   (``ru_maxrss``) above what it held after building the model, next to the same figure for one
   inference forward of ``batch_size`` images; peer: grad-cam's ScoreCAM.

Timing: every callable is called twice to warm up, then the median of ``--repeats`` calls is
taken; the baseline of a row is timed alternately with the row's callable, so machine noise hits
both. Threads: torch's default. Peer objects are built inside the timed call so their hooks never
stay on the model while another row runs (building one costs well under a millisecond).

Run ``make bench`` (``python benchmarks/bench_speed.py``); ``--quick`` for a smoke run in small
sizes (64x64 inputs, batch 2, 2 repeats), ``--repeats N``, ``--output PATH`` to also write the
table to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import camlens

Work = Callable[[], Any]

PEERS = {"pytorch_grad_cam": "grad-cam", "torchcam": "torchcam", "captum": "captum"}
SCORECAM_BATCH_SIZES = (16, 64, 256)
PEER_SCORECAM_BATCH_SIZE = 16  # grad-cam's own default


@dataclass(frozen=True)
class Sizes:
    image: int  # square inputs, image x image
    batch: int  # batch of rows 1 to 3 (rows 4 and 5 explain one input)


FULL = Sizes(image=224, batch=8)
QUICK = Sizes(image=64, batch=2)


@dataclass
class Row:
    case: str
    library: str
    time_ms: float | None = None
    baseline: str = ""
    baseline_ms: float | None = None
    target: float | None = None  # the ratio camlens aims at (camlens rows only)
    peak_mib: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.time_ms is None or not self.baseline_ms:
            return None
        return self.time_ms / self.baseline_ms


# --- timing ----------------------------------------------------------------------------------


def timed_ms(work: Work) -> float:
    """Milliseconds one call of ``work`` takes (its result is freed after the clock stops)."""
    start = time.perf_counter()
    _result = work()
    return (time.perf_counter() - start) * 1000.0


def interleaved(work: Work, baseline: Work, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median milliseconds of ``work`` and of ``baseline``, timed alternately after ``warmup``
    calls of each."""
    for _ in range(warmup):
        baseline()
        work()
    work_times, baseline_times = [], []
    for _ in range(repeats):
        baseline_times.append(timed_ms(baseline))
        work_times.append(timed_ms(work))
    return statistics.median(work_times), statistics.median(baseline_times)


def inference_forward(model: nn.Module, inputs: torch.Tensor) -> Work:
    """The baseline: the model's forward pass under ``torch.inference_mode()``."""

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(inputs)

    return run


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def make_inputs(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``(H, W)`` map, as camlens, grad-cam and torchcam do."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low + 1e-8)


# --- peers (each returns the work of one call; importing may raise ImportError) --------------


def quiet() -> contextlib.AbstractContextManager:
    """Keep grad-cam's tqdm progress bars (written to stderr) out of the report."""
    return contextlib.redirect_stderr(io.StringIO())


def peer_gradcam_pytorch_grad_cam(model: nn.Module, inputs: torch.Tensor) -> Work:
    from pytorch_grad_cam import GradCAM

    def run() -> Any:
        # targets=None: the library builds ClassifierOutputTarget(top-1 class) for each input.
        with GradCAM(model, target_layers=[model.layer4]) as cam:
            return cam(inputs, targets=None)

    return run


def peer_vit_pytorch_grad_cam(model: nn.Module, inputs: torch.Tensor, grid: int) -> Work:
    from pytorch_grad_cam import GradCAM

    def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:  # the library's ViT recipe
        patches = tokens[:, 1:, :].reshape(tokens.shape[0], grid, grid, tokens.shape[2])
        return patches.permute(0, 3, 1, 2)

    def run() -> Any:
        with GradCAM(model, target_layers=[model.blocks[-1].norm1],
                     reshape_transform=tokens_to_grid) as cam:
            return cam(inputs, targets=None)

    return run


def peer_box_pytorch_grad_cam(detector: nn.Module, image: torch.Tensor,
                              found: dict[str, torch.Tensor]) -> Work:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    layer = dict(detector.named_modules())["backbone.body.12"]
    target = FasterRCNNBoxScoreTarget(labels=[int(found["labels"][0])],
                                      bounding_boxes=found["boxes"][:1], iou_threshold=0.5)

    def run() -> Any:
        with GradCAM(model=detector, target_layers=[layer]) as cam:
            return cam(input_tensor=image, targets=[target])

    return run


def peer_method_pytorch_grad_cam(class_name: str, model: nn.Module, inputs: torch.Tensor,
                                 layers: list, classes: list[int], target: str,
                                 options: dict) -> Work:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

    make = ClassifierOutputReST if target == "rest" else ClassifierOutputTarget
    targets = None if target == "none" else [make(k) for k in classes]
    cam_class = getattr(pytorch_grad_cam, class_name)

    def run() -> Any:
        with quiet(), cam_class(model=model, target_layers=layers) as cam:
            return cam(input_tensor=inputs, targets=targets, **options)

    return run


def peer_gradcam_torchcam(model: nn.Module, inputs: torch.Tensor) -> Work:
    from torchcam.methods import GradCAM

    size = tuple(inputs.shape[-2:])

    def run() -> torch.Tensor:
        with GradCAM(model, target_layer="layer4") as extractor:
            scores = model(inputs)  # torchcam needs the forward with autograd recording
            cams = extractor(scores.argmax(dim=1).tolist(), scores)
        maps = F.interpolate(cams[0].unsqueeze(1), size=size, mode="bilinear", align_corners=False)
        return maps.squeeze(1)

    return run


def peer_gradcam_captum(model: nn.Module, inputs: torch.Tensor) -> Work:
    from captum.attr import LayerAttribution, LayerGradCam

    size = tuple(inputs.shape[-2:])

    def run() -> torch.Tensor:
        with torch.no_grad():  # captum needs the classes up front
            classes = model(inputs).argmax(dim=1)
        attribution = LayerGradCam(model, model.layer4).attribute(
            inputs, target=classes, relu_attributions=True
        )
        maps = LayerAttribution.interpolate(attribution.detach(), size, interpolate_mode="bilinear")
        return normalize_maps(maps.squeeze(1))

    return run


def peer_ablationcam_pytorch_grad_cam(model: nn.Module, inputs: torch.Tensor) -> Work:
    from pytorch_grad_cam import AblationCAM

    def run() -> Any:
        with quiet(), AblationCAM(model, target_layers=[model.layer4]) as cam:
            return cam(inputs, targets=None)

    return run


def peer_scorecam_pytorch_grad_cam(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> Work:
    from pytorch_grad_cam import ScoreCAM

    def run() -> Any:
        with quiet(), ScoreCAM(model, target_layers=[model.layer4]) as cam:
            cam.batch_size = batch_size
            return cam(inputs, targets=None)

    return run


GRADCAM_PEERS: dict[str, tuple[Callable[[nn.Module, torch.Tensor], Work], str]] = {
    "pytorch_grad_cam": (
        peer_gradcam_pytorch_grad_cam,
        "targets=None (ClassifierOutputTarget of the top-1 class); backward through the whole "
        "network; maps resized with OpenCV",
    ),
    "torchcam": (
        peer_gradcam_torchcam,
        "forward with autograd, cam_extractor(top-1, scores), F.interpolate to the input size",
    ),
    "captum": (
        peer_gradcam_captum,
        "includes one inference forward to find the top-1 classes; LayerGradCam + "
        "LayerAttribution.interpolate + min-max normalisation",
    ),
}


# --- the benchmark -----------------------------------------------------------------------------


class Bench:
    def __init__(self, sizes: Sizes, repeats: int) -> None:
        self.sizes = sizes
        self.repeats = repeats
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = "" if row.ratio is None else f" ratio {row.ratio:.2f}"
        shown = "-" if row.time_ms is None else f"{row.time_ms:.1f} ms"
        print(f"  {row.case} | {row.library}: {shown}{ratio} {row.note}", file=sys.stderr)

    def measure(
        self,
        case: str,
        library: str,
        work: Work,
        baseline_name: str,
        baseline: Work,
        *,
        target: float | None = None,
        note: str = "",
    ) -> Row:
        time_ms, baseline_ms = interleaved(work, baseline, self.repeats)
        row = Row(case, library, time_ms, baseline_name, baseline_ms, target, note=note)
        self.add(row)
        return row

    def measure_peer(
        self,
        case: str,
        module: str,
        make_work: Callable[[], Work],
        baseline_name: str,
        baseline: Work,
        model: nn.Module,
        note: str = "",
    ) -> None:
        """A peer's row: "not installed" when its import fails, the error when its call does."""
        library = peer_label(module)
        try:
            work = make_work()
        except ImportError:
            self.add(Row(case, library, note="not installed"))
            return
        try:
            self.measure(case, library, work, baseline_name, baseline, note=note)
        except Exception as error:  # a peer's API change must not lose the rest of the run
            traceback.print_exc()
            self.add(Row(case, library, note=f"failed: {type(error).__name__}: {error}"[:200]))
        finally:
            model.zero_grad(set_to_none=True)  # grad-cam's backward fills parameter grads

    def transformers_and_detectors(self) -> None:
        """Rows 6 and 7: a ViT (tokens folded onto the patch grid; also the automatic layer,
        which costs one forward and one backward of its own) and a detector's box."""
        import timm
        import torchvision

        batch, size = self.sizes.batch, self.sizes.image
        torch.manual_seed(0)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False,
                                img_size=size).eval()
        inputs = make_inputs(batch, size)
        forward = inference_forward(vit, inputs)
        case = f"6. gradcam vit_tiny blocks.-1.norm1 b{batch} {size}x{size} top-1, maps"

        def camlens_vit() -> torch.Tensor:
            return camlens.explain(vit, inputs, layer="blocks.-1.norm1").maps

        self.measure(case, "camlens", camlens_vit, "forward", forward)
        self.measure_peer(case, "pytorch_grad_cam",
                          lambda: peer_vit_pytorch_grad_cam(vit, inputs, size // 16), "forward",
                          forward, vit, "reshape_transform from the library's ViT tutorial")

        def camlens_vit_automatic() -> torch.Tensor:
            return camlens.explain(vit, inputs).maps

        self.measure(f"6. gradcam vit_tiny layer=None b{batch} {size}x{size} top-1, maps",
                     "camlens", camlens_vit_automatic, "forward", forward,
                     note="the layer is detected: one forward with autograd and one backward "
                          "more")

        detector = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, num_classes=91, box_score_thresh=0.0).eval()
        image = torch.rand(1, 3, size, size)
        with torch.no_grad():
            found = detector(image)[0]
        box = camlens.BoxTarget(found["boxes"][0].tolist(), label=int(found["labels"][0]))

        def camlens_box() -> torch.Tensor:
            return camlens.explain(detector, image, layer="backbone.body.12", target=box).maps

        case = f"7. gradcam fasterrcnn_mobilenet_v3_320 b1 {size}x{size} one box, maps"
        detector_forward = inference_forward(detector, image)
        self.measure(case, "camlens", camlens_box, "forward", detector_forward,
                     note="BoxTarget: the score of the detection matching a box")
        self.measure_peer(case, "pytorch_grad_cam",
                          lambda: peer_box_pytorch_grad_cam(detector, image, found),
                          "forward", detector_forward, detector,
                          "GradCAM with FasterRCNNBoxScoreTarget: the same map (correlation "
                          "1.0 with camlens')")

    def methods_and_options(self) -> None:
        """Rows 8 and 9: issue 13's methods and options against pytorch-grad-cam's (the same
        maps or the stated differences: benchmarks/PEERS.md), and layer fusion against separate
        calls."""
        batch, size = self.sizes.batch, self.sizes.image
        model = make_model("resnet50")
        inputs = make_inputs(batch, size)
        forward = inference_forward(model, inputs)
        with torch.no_grad():
            top1 = model(inputs).argmax(dim=1).tolist()
        rows = (
            ("eigengradcam", "eigengradcam", {}, "EigenGradCAM", {}, "logit"),
            ("shapleycam", "shapleycam", {}, "ShapleyCAM", {}, "rest"),
            ("finercam", "finercam", {}, "FinerCAM", {}, "none"),
            ("fullgrad", "fullgrad", {}, "FullGrad", {}, "logit"),
            ("gradcam aug_smooth", "gradcam", {"aug_smooth": True}, "GradCAM",
             {"aug_smooth": True}, "logit"),
            ("gradcam eigen_smooth", "gradcam", {"eigen_smooth": True}, "GradCAM",
             {"eigen_smooth": True}, "logit"),
        )
        for label, method, options, peer_class, peer_options, peer_target in rows:
            case = f"8. {label} resnet50 layer4 b{batch} {size}x{size} top-1, maps"

            def ours(method: str = method, options: dict = options) -> torch.Tensor:
                return camlens.explain(model, inputs, method, layer="layer4", **options).maps

            self.measure(case, "camlens", ours, "forward", forward)
            self.measure_peer(
                case, "pytorch_grad_cam",
                lambda c=peer_class, o=peer_options, t=peer_target: peer_method_pytorch_grad_cam(
                    c, model, inputs, [model.layer4] if c != "FullGrad" else [], top1, t, o),
                "forward", forward, model, "the same maps or the differences of PEERS.md")

        layers = ["layer2", "layer3", "layer4"]
        case = f"9. layercam resnet50 {'+'.join(layers)} b{batch} {size}x{size} top-1, maps"

        def fused() -> torch.Tensor:
            return camlens.explain(model, inputs, "layercam", layer=layers, fuse="mean").maps

        def separate() -> list[torch.Tensor]:
            return [camlens.explain(model, inputs, "layercam", layer=layer).maps
                    for layer in layers]

        self.measure(case, "camlens", fused, "forward", forward,
                     note="one forward and one backward for the three layers")
        self.measure(case, "camlens, 3 separate calls", separate, "forward", forward)
        self.measure_peer(
            case, "pytorch_grad_cam",
            lambda: peer_method_pytorch_grad_cam(
                "LayerCAM", model, inputs, [getattr(model, name) for name in layers], top1,
                "logit", {}),
            "forward", forward, model, "target_layers=[layer2, layer3, layer4]")

    def gradcam(self) -> None:
        batch, size = self.sizes.batch, self.sizes.image
        case = f"1. gradcam resnet50 layer4 b{batch} {size}x{size} top-1, maps"
        model = make_model("resnet50")
        inputs = make_inputs(batch, size)
        forward = inference_forward(model, inputs)

        def camlens_top1() -> torch.Tensor:
            return camlens.explain(model, inputs, method="gradcam", layer="layer4").maps

        top1 = self.measure(case, "camlens", camlens_top1, "forward", forward, target=1.10)
        for module, (make_peer, note) in GRADCAM_PEERS.items():
            self.measure_peer(
                case, module, lambda m=make_peer: m(model, inputs), "forward", forward, model, note
            )

        def camlens_top3() -> torch.Tensor:
            explanation = camlens.explain(
                model, inputs, method="gradcam", layer="layer4", target=camlens.TopK(3)
            )
            return explanation.maps

        self.measure(
            f"2. gradcam resnet50 layer4 b{batch} {size}x{size} TopK(3), maps",
            "camlens",
            camlens_top3,
            "camlens K=1",
            camlens_top1,
            target=1.3,
            note=f"K=1 alone measured {top1.time_ms:.1f} ms in row 1; peers: one class per call",
        )

        def cam_all_raw() -> torch.Tensor:
            return camlens.explain(model, inputs, method="cam", layer="layer4", target="all").raw

        def cam_all_maps() -> torch.Tensor:
            return camlens.explain(model, inputs, method="cam", layer="layer4", target="all").maps

        maps = batch * model.fc.out_features
        gigabytes = maps * size * size * 4 / 1e9
        case = f"3. cam resnet50 layer4 b{batch} {size}x{size} target='all'"
        self.measure(
            f"{case}, raw",
            "camlens",
            cam_all_raw,
            "forward",
            forward,
            target=1.05,
            note=f"{maps} maps at the layer's resolution",
        )
        self.measure(
            f"{case}, maps",
            "camlens",
            cam_all_maps,
            "forward",
            forward,
            note=f"{maps} maps upsampled to {size}x{size} and normalised ({gigabytes:.2f} GB "
            "of float32 for the result alone)",
        )

    def ablationcam(self) -> None:
        size = self.sizes.image
        case = f"4. ablationcam resnet18 layer4 b1 {size}x{size}, maps"
        model = make_model("resnet18")
        inputs = make_inputs(1, size)
        forward = inference_forward(model, inputs)

        def camlens_ablation() -> torch.Tensor:
            return camlens.explain(model, inputs, method="ablationcam", layer="layer4").maps

        self.measure(
            case,
            "camlens",
            camlens_ablation,
            "forward",
            forward,
            target=10.0,
            note="batch_size=None: the 512 ablated copies of layer4's output go through the head "
            "in one forward",
        )
        self.measure_peer(
            case,
            "pytorch_grad_cam",
            lambda: peer_ablationcam_pytorch_grad_cam(model, inputs),
            "forward",
            forward,
            model,
            note="default batch_size=32: the network up to layer4 runs for each chunk of 32 copies",
        )

    def scorecam(self) -> None:
        size = self.sizes.image
        case = f"5. scorecam resnet18 layer4 b1 {size}x{size}, maps"
        for batch_size in SCORECAM_BATCH_SIZES:
            reference = run_worker({"kind": "forward", "batch_size": batch_size, "size": size})
            result = run_worker(
                {"kind": "camlens", "batch_size": batch_size, "size": size, "repeats": self.repeats}
            )
            self.add(
                Row(
                    f"{case}, batch_size={batch_size}",
                    "camlens",
                    result["time_ms"],
                    "forward",
                    result["forward_ms"],
                    peak_mib=result["peak_mib"],
                    note=f"an inference forward of {batch_size} images peaks at "
                    f"{reference['peak_mib']:.1f} MiB",
                )
            )
        peer_case = f"{case}, batch_size={PEER_SCORECAM_BATCH_SIZE}"
        try:
            import pytorch_grad_cam  # noqa: F401
        except ImportError:
            self.add(Row(peer_case, peer_label("pytorch_grad_cam"), note="not installed"))
            return
        config = {"kind": "pytorch_grad_cam", "batch_size": PEER_SCORECAM_BATCH_SIZE, "size": size}
        try:
            result = run_worker({**config, "repeats": self.repeats})
        except RuntimeError as error:  # a peer's API change must not lose the rest of the run
            print(error, file=sys.stderr)
            self.add(Row(peer_case, peer_label("pytorch_grad_cam"), note="failed: see stderr"))
            return
        self.add(
            Row(
                peer_case,
                peer_label("pytorch_grad_cam"),
                result["time_ms"],
                "forward",
                result["forward_ms"],
                peak_mib=result["peak_mib"],
                note="masks all 512 copies of the input before batching them",
            )
        )


# --- peak memory, in fresh subprocesses ----------------------------------------------------------


def max_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# Linux hands a process started with exec the peak RSS of the process it replaced, so a worker
# started straight from this (large) process would report this process's peak as its own. A
# small Python process in between forks the worker, which then starts from that one's few MiB.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def check_own_peak(peak_mib: float) -> None:
    """On Linux, fail if ru_maxrss is above this process image's own high-water mark (VmHWM):
    then it was inherited from the launching process and the measurement would be meaningless."""
    status = Path("/proc/self/status")
    if not status.exists():
        return
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            own_mib = int(line.split()[1]) / 1024
            if peak_mib > own_mib + 16:
                raise RuntimeError(
                    f"ru_maxrss ({peak_mib:.0f} MiB) exceeds this process's own peak "
                    f"({own_mib:.0f} MiB): it was inherited from the launcher"
                )
            return


def run_worker(config: dict[str, Any]) -> dict[str, float]:
    """Run one Score-CAM memory configuration in a fresh interpreter and return its report."""
    worker_command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    command = [sys.executable, "-c", LAUNCHER, *worker_command]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {config} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(config: dict[str, Any]) -> dict[str, float]:
    """Peak memory above the state after building the model and input, then the timing."""
    size, batch_size, kind = config["size"], config["batch_size"], config["kind"]
    model = make_model("resnet18")
    image = make_inputs(1, size)
    forward = inference_forward(model, image)
    work: Work
    if kind == "forward":
        work = inference_forward_copies(model, image, batch_size)
    elif kind == "camlens":
        scorecam = camlens.ScoreCAM(model, "layer4", batch_size=batch_size)
        work = lambda: scorecam(image).maps  # noqa: E731
    elif kind == "pytorch_grad_cam":
        work = peer_scorecam_pytorch_grad_cam(model, image, batch_size)
    else:
        raise ValueError(f"unknown worker kind {kind!r}")
    gc.collect()
    before = max_rss_mib()
    check_own_peak(before)
    work()  # the two warm-up calls; the peak is read before the baseline forward ever runs
    work()
    report = {"peak_mib": max_rss_mib() - before}
    if kind != "forward":
        forward()
        forward()
        report["time_ms"], report["forward_ms"] = interleaved(
            work, forward, config["repeats"], warmup=0
        )
    return report


def inference_forward_copies(model: nn.Module, image: torch.Tensor, copies: int) -> Work:
    """An inference forward of ``copies`` copies of ``image``, the copies made inside the call
    (as Score-CAM makes its masked copies)."""

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(image.expand(copies, -1, -1, -1).clone())

    return run


# --- report ------------------------------------------------------------------------------------


def peer_label(module: str) -> str:
    return f"{PEERS[module]} ({module})" if PEERS[module] != module else module


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def header(sizes: Sizes, repeats: int, quick: bool) -> list[str]:
    processor = platform.processor() or platform.machine()
    peers = ", ".join(f"{name} {version_of(name)}" for name in PEERS.values())
    mode = f"{'quick' if quick else 'full'} ({sizes.image}x{sizes.image}, batch {sizes.batch})"
    return [
        "# camlens speed benchmark",
        "",
        f"- machine: {processor}, {os.cpu_count()} logical CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"- torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision "
        f"{torchvision.__version__}, camlens {camlens.__version__}",
        f"- peers: {peers}",
        f"- mode: {mode}; CPU; random weights; median of {repeats} calls after 2 warm-up calls, "
        "each timed alternately with its baseline",
        "- forward: the same model and batch under torch.inference_mode() in eval mode; "
        "ratio = time / baseline",
        "",
    ]


def number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| case | library | time (ms) | baseline | baseline (ms) | ratio | target | meets "
        "| peak mem (MiB) | note |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        meets = ""
        if row.target is not None and row.ratio is not None:
            meets = "yes" if row.ratio <= row.target else "no"
        target = "" if row.target is None else f"<= {row.target:g}"
        cells = [
            row.case,
            row.library,
            number(row.time_ms, 1),
            row.baseline,
            number(row.baseline_ms, 1),
            number(row.ratio, 3 if row.ratio is not None and row.ratio < 10 else 1),
            target,
            meets,
            number(row.peak_mib, 1),
            row.note.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


QUICK_NOTE = (
    "Quick mode checks that the script runs: at these sizes fixed per-call costs dominate, so its "
    "ratios say nothing about the targets, which are for the full sizes."
)

FOOTNOTES = [
    "",
    "Peak memory (row 5): each configuration runs in a fresh interpreter; the figure is the rise "
    "of the peak resident set size (ru_maxrss) above its value after the model and the input "
    "were built, over two calls. With camlens it should follow batch_size, not the 512 channels "
    "of layer4.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per measurement, median reported (default 5; 2 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK.image}x{QUICK.image} inputs, batch {QUICK.batch}",
    )
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON config of a memory subprocess
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    sizes = QUICK if args.quick else FULL
    bench = Bench(sizes, args.repeats)
    print("measuring (progress on stderr) ...", file=sys.stderr)
    bench.gradcam()
    bench.ablationcam()
    bench.scorecam()
    bench.transformers_and_detectors()
    bench.methods_and_options()
    notes = [*FOOTNOTES, "", QUICK_NOTE] if args.quick else FOOTNOTES
    report = "\n".join([*header(sizes, args.repeats, args.quick), *table(bench.rows), *notes])
    print(report)
    if args.output is not None:
        from sections import kept_sections  # benchmarks/sections.py, beside this script

        args.output.parent.mkdir(parents=True, exist_ok=True)
        kept = kept_sections(args.output)  # e.g. the pipeline's bars (bench_pipeline.py)
        args.output.write_text(report + "\n" + ("\n" + kept if kept else ""))


if __name__ == "__main__":
    main()
