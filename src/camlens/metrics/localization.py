"""Weakly supervised localization: a box from a map, and whether it finds the object.

Protocol of CAM (Zhou et al., "Learning Deep Features for Discriminative Localization",
CVPR 2016), reused by Grad-CAM (Selvaraju et al., ICCV 2017 / IJCV 2019):

1. compute the map of the predicted class (top-1) or of each of the top-5 classes;
2. keep the pixels with ``map >= threshold * max(map)`` (CAM: ``threshold = 0.2``; Grad-CAM:
   ``0.15``);
3. draw the box around the largest connected component of those pixels;
4. a prediction is a hit when its class is right AND ``IoU(box, ground truth) >= 0.5``;
   localization error = 1 - hit rate (top-5: a hit when any of the five predictions hits).

MaxBoxAcc (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR
2020) takes the threshold out of the protocol: the map of the ground-truth class, boxes at every
threshold ``tau`` in ``0, 0.01, ..., 0.99``, ``BoxAcc(tau) = mean_n [max_m IoU(box_n(tau),
B_nm) >= delta]`` with ``delta = 0.5``, and ``MaxBoxAcc = max_tau BoxAcc(tau)``
(:func:`box_accuracy_hits`, :func:`max_box_accuracy`).

Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the map, ``x1`` and ``y1`` exclusive:
the box ``(0, 0, W, H)`` covers a whole ``H x W`` map and its area is ``(x1 - x0) * (y1 - y0)``.
Pixel ``(y, x)`` lies in a box when its centre ``(x + 0.5, y + 0.5)`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BOX_ACCURACY_THRESHOLDS", "MAP_CONVENTIONS", "box_accuracy_hits", "box_iou",
           "box_masks", "center_box", "connected_components", "full_image_box",
           "largest_component_boxes", "localization_error", "localization_hits",
           "max_box_accuracy", "scale_maps"]

#: The map thresholds of MaxBoxAcc (Choe et al., CVPR 2020): 0, 0.01, ..., 0.99.
BOX_ACCURACY_THRESHOLDS = tuple(step / 100 for step in range(100))
#: How a map is scaled before a threshold is applied (:func:`scale_maps`).
MAP_CONVENTIONS = ("relu-max", "min-max")


def scale_maps(maps: torch.Tensor, convention: str = "relu-max") -> torch.Tensor:
    """Maps ``(..., H, W)`` scaled to ``[0, 1]`` per map by one of the two conventions the papers'
    box protocols use; a threshold ``tau`` then keeps ``scaled >= tau``.

    - ``"relu-max"`` (Grad-CAM, Selvaraju et al. ICCV 2017: the map is ``ReLU(sum_k alpha_k A^k)``
      and the box keeps the pixels above a fraction of its maximum):
      ``S = max(M, 0) / max_ij max(M_ij, 0)``, so ``S >= tau`` iff ``M >= tau * max M``; a map
      with no positive value becomes all zeros.
    - ``"min-max"`` (CAM's released code, Zhou et al. CVPR 2016: ``cam - min(cam)``, then divided
      by its maximum, no ReLU; also Choe et al.'s ``normalize_scoremap`` for MaxBoxAcc):
      ``S = (M - min M) / (max M - min M)``, so ``S >= tau`` iff
      ``M >= min M + tau * (max M - min M)``; a constant map becomes all zeros.

    On a map whose minimum is 0 the two agree. On a raw (pre-ReLU) map with negative values the
    min-max threshold sits lower, ``tau * max M - (1 - tau) * |min M|`` instead of ``tau * max M``,
    so the kept region, and its box, grow.
    """
    if convention not in MAP_CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(MAP_CONVENTIONS)}, got "
                         f"{convention!r}")
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape (..., H, W), got {tuple(maps.shape)}")
    if maps.is_complex() or not maps.is_floating_point():
        maps = maps.float()
    if convention == "relu-max":
        maps = maps.clamp_min(0)
        low = torch.zeros_like(maps.amin(dim=(-2, -1), keepdim=True))
    else:
        low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def connected_components(foreground: torch.Tensor) -> torch.Tensor:
    """Labels ``(N, H, W)`` long of the 8-connected components of boolean masks ``(N, H, W)``.

    Background pixels get 0; every pixel of a component gets 1 + the raster index
    (``y * W + x``) of the component's last pixel, so labels are unique within a mask.

    Batched label propagation: each foreground pixel starts with its own label ``1 + y * W + x``
    and repeatedly takes the largest label in its 3 x 3 neighbourhood (a max-pool whose result is
    kept on the foreground only, so labels never cross background), until nothing changes. Each
    round also jumps every label to the label of the pixel it names (pointer jumping; that pixel
    lies in the same component), so long components converge in far fewer rounds than their
    length.
    """
    if foreground.ndim != 3 or foreground.dtype != torch.bool:
        raise ValueError(
            f"foreground must be a boolean tensor (N, H, W), got {foreground.dtype} of shape "
            f"{tuple(foreground.shape)}"
        )
    count, height, width = foreground.shape
    pixels = height * width
    # max_pool2d needs floats; float32 holds every label exactly below 2**24 pixels
    dtype = torch.float32 if pixels < 2**24 else torch.float64
    raster = torch.arange(1, pixels + 1, device=foreground.device, dtype=dtype)
    labels = torch.where(foreground.reshape(count, pixels), raster, 0).reshape(count, height, width)
    mask = foreground.to(dtype)
    active = torch.arange(count, device=foreground.device)  # the masks still changing
    while active.numel():
        current = labels[active]
        spread = F.max_pool2d(current.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
        spread = spread * mask[active]
        # a leading 0 column: label L reads column L (pixel L - 1), background reads 0
        padded = F.pad(spread.reshape(len(active), pixels), (1, 0))
        jumped = padded.gather(1, padded[:, 1:].long()).reshape(current.shape)
        moving = (jumped != current).flatten(1).any(dim=1)
        labels[active] = jumped
        active = active[moving]
    return labels.long()


def largest_component_boxes(maps: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Box ``(..., 4)`` float ``(x0, y0, x1, y1)`` around the largest 8-connected component of
    ``map >= threshold * map.max()``, one per map of ``maps (..., H, W)``.

    CAM (Zhou et al., CVPR 2016) uses ``threshold = 0.2``, Grad-CAM (Selvaraju et al.) ``0.15``.
    Pixels touching at a corner belong to the same component (8-connectivity).

    - The threshold is relative to the map's maximum, not to its range: on camlens' min-max
      normalised ``Explanation.maps`` (minimum 0) the two agree.
    - A map whose maximum is 0 or less (an all-zero map, a map with no positive evidence) gets
      the full-image box ``(0, 0, W, H)``: ``map >= threshold * 0`` keeps every pixel of an
      all-zero map, so the rule itself gives the whole image.
    - Among equally large components, the one whose last pixel in raster order comes first wins.
    """
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape (..., H, W), got {tuple(maps.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a fraction of the map's maximum in [0, 1], got {threshold}")
    if maps.is_complex() or not maps.is_floating_point():
        maps = maps.float()
    if torch.isnan(maps).any():
        raise ValueError("maps contain NaN; a box needs finite map values")
    leading, (height, width) = maps.shape[:-2], maps.shape[-2:]
    flat_maps = maps.reshape(-1, height, width)
    peak = flat_maps.amax(dim=(1, 2), keepdim=True)
    foreground = (flat_maps >= threshold * peak) & (peak > 0)
    labels = connected_components(foreground).reshape(flat_maps.shape[0], -1)
    sizes = torch.zeros(
        flat_maps.shape[0], height * width + 1, device=maps.device, dtype=torch.long
    ).scatter_add_(1, labels, torch.ones_like(labels))
    sizes[:, 0] = 0  # background is not a component
    largest = sizes.argmax(dim=1)  # the first (smallest) label among ties
    component = (labels == largest[:, None]).reshape(-1, height, width)
    boxes = _mask_extent(component)
    full = full_image_box((height, width), device=maps.device).expand_as(boxes)
    boxes = torch.where((peak.reshape(-1, 1) > 0), boxes, full)
    return boxes.reshape(*leading, 4)


def _mask_extent(masks: torch.Tensor) -> torch.Tensor:
    """The tightest box ``(N, 4)`` around the True pixels of each mask ``(N, H, W)``; an empty
    mask gets the empty box ``(0, 0, 0, 0)``."""
    height, width = masks.shape[-2:]
    columns, rows = masks.any(dim=1), masks.any(dim=2)  # (N, W), (N, H)
    x0 = columns.int().argmax(dim=1)
    x1 = width - columns.flip(1).int().argmax(dim=1)
    y0 = rows.int().argmax(dim=1)
    y1 = height - rows.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(columns.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def box_masks(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Boolean masks ``(..., H, W)`` of boxes ``(..., 4)``: pixel ``(y, x)`` is inside when its
    centre is, ``x0 <= x + 0.5 < x1`` and ``y0 <= y + 0.5 < y1`` (exactly the pixels
    ``x0 .. x1 - 1`` and ``y0 .. y1 - 1`` for integer boxes)."""
    _check_boxes(boxes, "boxes")
    height, width = size
    boxes = boxes.float()
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))
    inside_x = (xs >= x0) & (xs < x1)  # (..., W)
    inside_y = (ys >= y0) & (ys < y1)  # (..., H)
    return inside_y[..., :, None] & inside_x[..., None, :]


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1 - x0) * (y1 - y0)`` of boxes ``(..., 4)``; an inverted box has area 0."""
    widths = (boxes[..., 2] - boxes[..., 0]).clamp_min(0)
    heights = (boxes[..., 3] - boxes[..., 1]).clamp_min(0)
    return widths * heights


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of matching boxes ``(..., 4)`` (shapes broadcast): ``(...,)``.

    ``IoU = |a ∩ b| / (|a| + |b| - |a ∩ b|)``; two boxes with no area at all have IoU 0.
    """
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    a, b = a.float(), b.float()
    overlap = torch.cat(
        [torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])], dim=-1
    )
    intersection = _box_area(overlap)
    union = _box_area(a) + _box_area(b) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1e-12), torch.zeros_like(union))


def localization_hits(
    pred_boxes: torch.Tensor,
    true_boxes: torch.Tensor,
    pred_classes: torch.Tensor,
    true_classes: torch.Tensor,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Bool ``(B,)``: does a prediction name the right class with ``IoU >= iou_threshold``?

    - ``pred_boxes (B, 4)`` with ``pred_classes (B,)`` for top-1, or ``(B, K, 4)`` with
      ``(B, K)`` for top-K (a hit when any of the K predictions hits); a single int class is
      shared by every image;
    - ``true_boxes (B, 4)`` or ``(B, M, 4)`` (several objects; pad with empty boxes such as
      ``(0, 0, 0, 0)``, which never hit) with ``true_classes (B,)`` (one class per image, as in
      ILSVRC) or ``(B, M)`` (one per box).

    A prediction hits a ground-truth box when their classes agree and their IoU reaches
    ``iou_threshold`` (0.5 in ILSVRC, CAM and Grad-CAM).
    """
    pred_boxes, pred_classes = _with_box_axis(pred_boxes, pred_classes, "pred")
    true_boxes, true_classes = _with_box_axis(true_boxes, true_classes, "true")
    if pred_boxes.shape[0] != true_boxes.shape[0]:
        raise ValueError(
            f"pred_boxes hold {pred_boxes.shape[0]} images but true_boxes {true_boxes.shape[0]}"
        )
    true_classes = true_classes.to(pred_classes.device)
    iou = box_iou(pred_boxes[:, :, None, :], true_boxes[:, None, :, :].to(pred_boxes.device))
    same_class = pred_classes[:, :, None] == true_classes[:, None, :]
    return (same_class & (iou >= iou_threshold)).any(dim=2).any(dim=1)


def localization_error(
    pred_boxes: torch.Tensor,
    true_boxes: torch.Tensor,
    pred_classes: torch.Tensor,
    true_classes: torch.Tensor,
    iou_threshold: float = 0.5,
) -> float:
    """The fraction of images in [0, 1] without a hit (see :func:`localization_hits`); with K
    predictions per image this is the top-K localization error."""
    hits = localization_hits(pred_boxes, true_boxes, pred_classes, true_classes, iou_threshold)
    return 1.0 - hits.float().mean().item()


def box_accuracy_hits(
    maps: torch.Tensor,
    true_boxes: torch.Tensor,
    thresholds: Sequence[float] = BOX_ACCURACY_THRESHOLDS,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Bool ``(B, T)``: at each of the ``T`` thresholds, does the box of the largest connected
    component of ``map >= tau * max(map)`` (:func:`largest_component_boxes`) reach
    ``iou_threshold`` with one of the image's ground-truth boxes?

    ``maps (B, H, W)``: the maps of the ground-truth class (Choe et al. min-max normalise them, as
    ``Explanation.maps`` are; the threshold is relative to the maximum, which on such maps is the
    same); ``true_boxes (B, 4)`` or ``(B, M, 4)`` (pad with empty boxes ``(0, 0, 0, 0)``, which
    never hit). The class is not checked: this is the ground-truth-known localization of
    MaxBoxAcc. Choe et al.'s code boxes the largest contour of OpenCV (``cv2.findContours``);
    here the largest 8-connected component, the same region up to holes.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got shape {tuple(maps.shape)}")
    _check_boxes(true_boxes, "true_boxes")
    boxes = true_boxes[:, None, :] if true_boxes.ndim == 2 else true_boxes
    if boxes.ndim != 3 or boxes.shape[0] != maps.shape[0]:
        raise ValueError(f"true_boxes must be (B, 4) or (B, M, 4) for {maps.shape[0]} maps, got "
                         f"{tuple(true_boxes.shape)}")
    boxes = boxes.to(maps.device).float()
    found = _threshold_boxes(maps, thresholds)  # (B, T, 4)
    if boxes.shape[1] == 0:
        return torch.zeros(found.shape[:2], dtype=torch.bool, device=maps.device)
    iou = box_iou(found[:, :, None, :], boxes[:, None, :, :])  # (B, T, M)
    return (iou >= iou_threshold).any(dim=2)


def _threshold_boxes(maps: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """:func:`largest_component_boxes` of ``maps (B, H, W)`` at every threshold, ``(B, T, 4)``.

    With SciPy, each threshold's components come from ``scipy.ndimage.label`` (8-connectivity)
    and the same rule picks the box (the largest component; among equals, the one whose last
    pixel in raster order comes first; the full image for a map without a positive maximum), a
    hundred times faster on a CPU than the batched propagation; without SciPy, that one."""
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - depends on the environment
        return torch.stack([largest_component_boxes(maps, float(t)) for t in thresholds], dim=1)
    if maps.is_complex() or not maps.is_floating_point():
        maps = maps.float()
    if torch.isnan(maps).any():
        raise ValueError("maps contain NaN; a box needs finite map values")
    values = maps.detach().cpu().numpy()
    count, height, width = values.shape
    raster = np.arange(height * width).reshape(height, width)
    structure = np.ones((3, 3), dtype=bool)
    found = np.zeros((count, len(thresholds), 4), dtype=np.float32)
    for row in range(count):
        peak = values[row].max()
        for column, threshold in enumerate(thresholds):
            if not peak > 0:
                found[row, column] = (0.0, 0.0, float(width), float(height))
                continue
            foreground = values[row] >= np.float32(threshold) * peak
            labels, _ = ndimage.label(foreground, structure=structure)
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            largest = np.flatnonzero(sizes == sizes.max())
            if len(largest) > 1:
                last = ndimage.maximum(raster, labels, largest)
                largest = largest[[int(np.argmin(last))]]
            label = int(largest[0])
            rows, columns = ndimage.find_objects(labels, max_label=label)[label - 1]
            found[row, column] = (columns.start, rows.start, columns.stop, rows.stop)
    return torch.from_numpy(found).to(maps.device)


def max_box_accuracy(
    hits: torch.Tensor, thresholds: Sequence[float] = BOX_ACCURACY_THRESHOLDS
) -> tuple[float, float]:
    """(MaxBoxAcc in [0, 1], the threshold that reaches it) from :func:`box_accuracy_hits`
    ``(B, T)``: ``max_tau mean_n hit[n, tau]`` (Choe et al., CVPR 2020); ties go to the lowest
    threshold."""
    if hits.ndim != 2 or hits.shape[1] != len(thresholds) or hits.shape[0] == 0:
        raise ValueError(f"hits must be (B, {len(thresholds)}) with B >= 1, got "
                         f"{tuple(hits.shape)}")
    accuracy = hits.float().mean(dim=0)
    best = int(accuracy.argmax())
    return float(accuracy[best]), float(thresholds[best])


def full_image_box(
    image_size: Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """The box ``(0, 0, W, H)`` ``(4,)`` of an image of ``image_size = (H, W)``: the baseline
    that always answers "the whole image"."""
    height, width = image_size
    return torch.tensor([0.0, 0.0, float(width), float(height)], device=device)


def center_box(
    image_size: Sequence[int],
    mean_box_size: Sequence[float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A box ``(4,)`` of ``mean_box_size = (h, w)`` centred on an image of ``image_size = (H, W)``
    (clipped to the image): the baseline that ignores the input and guesses the average box.
    Expand it with ``box.expand(B, 4)`` to score a batch."""
    height, width = (float(side) for side in image_size)
    box_height, box_width = (min(float(side), limit) for side, limit in zip(
        mean_box_size, (height, width), strict=True
    ))
    if box_height < 0 or box_width < 0:
        raise ValueError(f"mean_box_size must be non-negative (h, w), got {tuple(mean_box_size)}")
    x0, y0 = (width - box_width) / 2, (height - box_height) / 2
    return torch.tensor([x0, y0, x0 + box_width, y0 + box_height], device=device)


# --- shape checks --------------------------------------------------------------------------------


def _check_boxes(boxes: torch.Tensor, name: str) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.ndim < 1 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be a tensor of boxes (..., 4) (x0, y0, x1, y1), got {shape}")


def _with_box_axis(
    boxes: torch.Tensor, classes: torch.Tensor, which: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, N, 4)`` boxes and ``(B, N)`` classes from ``(B, 4)`` / ``(B, N, 4)`` boxes and
    ``(B,)`` / ``(B, N)`` classes."""
    _check_boxes(boxes, f"{which}_boxes")
    classes = torch.as_tensor(classes, device=boxes.device)
    if boxes.ndim == 2:
        boxes = boxes[:, None, :]
    if boxes.ndim != 3:
        raise ValueError(f"{which}_boxes must be (B, 4) or (B, N, 4), got {tuple(boxes.shape)}")
    if classes.ndim == 0:  # one class for every image
        classes = classes.expand(boxes.shape[:2])
    elif classes.ndim == 1:
        classes = classes[:, None].expand(-1, boxes.shape[1])
    if tuple(classes.shape) != tuple(boxes.shape[:2]):
        raise ValueError(
            f"{which}_classes of shape {tuple(classes.shape)} do not fit {which}_boxes of shape "
            f"{tuple(boxes.shape)}: give one class per image (B,) or per box (B, N)"
        )
    return boxes, classes
