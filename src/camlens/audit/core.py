"""``camlens.audit``: where do a model's maps put their mass, input by input, over a data set?

For each input: explain the predicted (or the true) class with a CAM method, and measure the share
of the map's mass inside each named region (the energy-based pointing game of Score-CAM, Wang et
al. 2020), next to the region's share of the area (what a uniform map would score). Summed over a
data set this says whether the model looks at the object or leans on a suspected cue, as the
Grad-CAM paper's bias study did (Selvaraju et al., ICCV 2017, Section 6.3: a biased doctor/nurse
classifier looked at faces and hair). :func:`counterfactual` adds the behavioural check: the
accuracy when the cue is moved or removed.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens.audit.items import NO_LABEL, Batch, ItemReader, stream
from camlens.audit.regions import RegionSpec, check_region_specs
from camlens.audit.result import (
    AuditExample,
    AuditResult,
    CounterfactualResult,
    VariantResult,
    concatenate,
)
from camlens.explanation import normalize, upsample
from camlens.methods import get_method
from camlens.metrics.pointing import energy_pointing_game
from camlens.model_state import model_device
from camlens.targets import Target, TopK, predicted_classes

__all__ = ["AuditPart", "assemble", "audit", "audit_batch", "audit_target", "counterfactual",
           "region_shares"]


def audit_target(target: Target | str) -> tuple[Target | str, str]:
    """(the target to explain, how the result names it)."""
    if target is None or target == "predicted" or target == TopK(1):
        return None, "predicted"
    if target == "label":
        return "label", "label"
    if isinstance(target, str):
        raise ValueError(f"unknown target {target!r}; use None or 'predicted' (the predicted "
                         "class), 'label' (the true class), a class index, TopK(1) or a callable")
    if isinstance(target, int) and not isinstance(target, bool):
        return target, f"class {target}"
    if isinstance(target, TopK):
        return target, f"top-{target.k}"  # refused at the first batch: K maps per input
    if callable(target):
        return target, getattr(target, "__name__", "custom score")
    raise TypeError(f"audit's target must be None, 'predicted', 'label', an int, TopK(1) or a "
                    f"callable; got {type(target).__name__}")


def audit(
    model: nn.Module,
    dataset: Any,
    regions: Mapping[str, RegionSpec],
    method: str = "gradcam",
    *,
    layer: str | nn.Module | None = None,
    target: Target | str = None,
    batch_size: int = 64,
    input_key: str | int = "image",
    label_key: str | int | None = "label",
    class_names: tuple[str, ...] | None = None,
    keep: int = 8,
    counterfactuals: Mapping[str, Any] | None = None,
    cue_key: str | int | None = None,
    progress: bool = False,
    num_workers: int = 0,
    name_key: str | int | None = None,
    **options: Any,
) -> AuditResult:
    """Audit where ``model``'s ``method`` maps put their mass on ``dataset``, region by region.

    - ``dataset``: a torch Dataset or any iterable of items: dicts (input under ``input_key``,
      label under ``label_key``), ``(input, label, ...)`` tuples, or input tensors; inputs are
      images ``(C, H, W)`` as the model takes them. It streams through in batches of
      ``batch_size`` (a DataLoader, ``num_workers`` worker processes), with a tqdm bar when
      ``progress``.
    - ``regions``: name -> where each item's region is: an item key holding a box ``(4,)``
      ``(x0, y0, x1, y1)`` in input pixels, boxes ``(N, 4)`` or a bool mask ``(H, W)``; or a
      callable ``item -> box, mask or None``. Example: ``{"object": "box", "cue": "mark_box"}``.
    - ``target``: what each map explains, in the forms of :mod:`camlens.targets` that give one
      map per input: ``None`` (or ``"predicted"``) the predicted class, an int that class,
      ``TopK(1)``, or a callable ``score_fn(output) -> (B,)``; ``"label"`` the item's true
      class. ``layer`` and ``options`` (``output_fn``, ...) go to the method as in
      :func:`camlens.explain`; the model is left exactly as it was found.
    - ``keep``: how many inputs with the highest share to keep per region, with their pictures
      and maps, for the report. ``class_names``: the label of each class (default: the model's own
      ``class_names`` attribute if it has one, else the indices).
    - ``cue_key``: the item key (or a callable) of the class a suspected cue points at (-1: no
      cue); the result then compares the shares when the prediction is the cue's class with
      the others (:meth:`~camlens.audit.result.AuditResult.by_cue`).
    - ``counterfactuals``: name -> a variant of the data (the cue moved, removed, ...): runs
      :func:`counterfactual` on them (with ``cue_key``, their cue-following rates too) and
      stores it in ``result.counterfactual``.
    - ``name_key``: the item key of each input's name (its file); the records and the report
      name the inputs by it (``result.names``).

    The share of region ``r`` is ``sum_{(i,j) in r} L_ij / sum_ij L_ij`` with ``L`` the map
    before min-max normalisation (after ReLU, upsampled to the input); a uniform map scores the
    region's area share. See :class:`~camlens.audit.result.AuditResult`.
    """
    target, described = audit_target(target)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"keep must be an int >= 0, got {keep!r}")
    specs = check_region_specs(regions)
    names = tuple(specs)
    explainer = get_method(method)(model, layer, **options)
    reader = ItemReader(input_key, label_key, specs, cue_key, name_key)
    parts: list[AuditPart] = []
    offset = 0
    for batch in stream(dataset, reader, batch_size, num_workers, progress, "auditing"):
        parts.append(audit_batch(explainer, batch, target, names, keep, offset, label_key,
                                 options.get("output_fn")))
        offset += len(batch)
    result = assemble(parts, names, explainer.name, described, keep,
                      class_names or getattr(model, "class_names", None),
                      with_cues=cue_key is not None, with_names=name_key is not None)
    if counterfactuals is not None:
        result.counterfactual = counterfactual(
            model, counterfactuals, batch_size=batch_size, input_key=input_key,
            label_key=label_key, cue_key=cue_key, output_fn=options.get("output_fn"),
            progress=progress, num_workers=num_workers)
    return result


@dataclass
class AuditPart:
    """The per-batch work of an audit (what an engine maps): the batch's columns and its
    candidates for the kept examples, ``(share, tiebreak, example)`` per region."""

    offset: int
    layer: str
    labels: torch.Tensor
    predictions: torch.Tensor
    scores: torch.Tensor
    shares: torch.Tensor
    areas: torch.Tensor
    empty: torch.Tensor
    cues: torch.Tensor | None
    names: list[str] | None
    kept: dict[str, list] = field(default_factory=dict)


def audit_batch(explainer, batch: Batch, target: Target | str, names: tuple[str, ...],
                keep: int, offset: int, label_key: str | int | None = "label",
                output_fn: Any = None) -> AuditPart:
    """Explain one batch (inputs numbered from ``offset``) and measure its region shares; the
    model runs where its parameters are. ``target`` as read by :func:`audit`."""
    model = explainer.model
    device = model_device(model)
    inputs = batch.inputs if device is None else batch.inputs.to(device)
    if target == "label":
        if (batch.labels == NO_LABEL).any():
            raise ValueError("target='label' needs a label in every item (label_key="
                             f"{label_key!r})")
        explanation = explainer(inputs, target=batch.labels.to(inputs.device))
    else:
        explanation = explainer(inputs, target=target)
    if explanation.scores.ndim != 1:
        raise ValueError(f"audit explains one target per input; target {target!r} gives "
                         f"{explanation.scores.shape[1]} per input")
    predictions = explanation.targets
    if target is not None or predictions is None:  # not the predicted class's map
        predictions = predicted_classes(model, inputs, output_fn)
    if len(explanation.input_size) != 2 or explanation.raw.ndim != 3:
        raise ValueError(
            f"audit needs one image map per input (B, H, W); {explanation.method} at layer "
            f"{explanation.layer!r} gave raw maps of shape {tuple(explanation.raw.shape)}"
        )
    mass = upsample(explanation.raw, explanation.input_size).cpu()
    masks = batch.masks
    if tuple(masks.shape[-2:]) != tuple(mass.shape[-2:]):
        raise ValueError(f"the maps are {tuple(mass.shape[-2:])} but the regions "
                         f"{tuple(masks.shape[-2:])}; give regions in input pixels")
    shares, areas, empty = region_shares(mass, masks, batch.present)
    kept: dict[str, list] = {name: [] for name in names}
    if keep:
        keep_highest(kept, names, keep, batch, mass, shares, offset)
    return AuditPart(offset, explanation.layer, batch.labels, predictions.cpu().long(),
                     explanation.scores.detach().cpu().float(), shares, areas, empty,
                     batch.cues, list(batch.names) if batch.names is not None else None, kept)


def assemble(parts: list[AuditPart], names: tuple[str, ...], method: str, described: str,
             keep: int, class_names: tuple[str, ...] | None, *, with_cues: bool,
             with_names: bool) -> AuditResult:
    """The :class:`AuditResult` of the per-batch ``parts`` (in any order: they are put in
    input order; each region keeps the ``keep`` inputs with the highest share over all)."""
    parts = sorted(parts, key=lambda part: part.offset)
    count = len(names)
    column = lambda key, shape, dtype: concatenate(  # noqa: E731
        [getattr(part, key) for part in parts], shape, dtype)
    kept = {}
    for name in names:
        entries = [entry for part in parts for entry in part.kept.get(name, [])]
        entries.sort(key=lambda entry: (-entry[0], -entry[1]))
        kept[name] = [example for _, _, example in entries[:keep]]
    total = sum(len(part.labels) for part in parts)
    result = AuditResult(
        regions=names,
        method=method,
        layer=parts[-1].layer if parts else "",
        target=described,
        indices=torch.arange(total),
        labels=column("labels", (0,), torch.long),
        predictions=column("predictions", (0,), torch.long),
        scores=column("scores", (0,), torch.float32),
        shares=column("shares", (0, count), torch.float32),
        areas=column("areas", (0, count), torch.float32),
        empty=column("empty", (0,), torch.bool),
        class_names=class_names,
        cues=concatenate([part.cues for part in parts if part.cues is not None], (0,),
                         torch.long) if with_cues else None,
        examples=kept,
        names=[name for part in parts for name in (part.names or [])] if with_names else None,
    )
    if total == 0:
        result.notes.append("the data set was empty")
    if int(result.empty.sum()):
        result.notes.append(f"{int(result.empty.sum())} all-zero map(s): no mass to place, left "
                            "out of the share means")
    return result


def region_shares(mass: torch.Tensor, masks: torch.Tensor, present: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shares (B, R), area shares (B, R), empty (B,)) of non-negative maps ``mass (B, H, W)`` in
    the region masks ``(B, R, H, W)``; NaN where a region is absent or a map all zero."""
    empty = mass.flatten(1).sum(dim=1) <= 0
    shares = energy_pointing_game(mass[:, None].expand(masks.shape), masks)
    areas = masks.flatten(2).float().mean(dim=2)
    nan = torch.tensor(float("nan"))
    shares = torch.where(present & ~empty[:, None], shares.float(), nan)
    areas = torch.where(present, areas, nan)
    return shares, areas, empty


def keep_highest(kept: dict[str, list], names: tuple[str, ...], keep: int, batch: Batch,
                 mass: torch.Tensor, shares: torch.Tensor, offset: int) -> None:
    """Update each region's heap of the ``keep`` inputs with the highest share."""
    for column, name in enumerate(names):
        heap = kept[name]
        for row in torch.nonzero(~torch.isnan(shares[:, column])).flatten().tolist():
            share = float(shares[row, column])
            # tiebreak: among equal shares the earlier input wins (it ranks higher)
            entry = (share, -(offset + row))
            if len(heap) == keep and entry <= heap[0][:2]:
                continue
            example = AuditExample(
                index=offset + row,
                image=batch.inputs[row].detach().cpu(),
                map=normalize(mass[row], 2),
                masks=batch.masks[row],
                present=batch.present[row],
            )
            item = (share, -(offset + row), example)
            if len(heap) < keep:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)


def counterfactual(
    model: nn.Module,
    variants: Mapping[str, Any],
    *,
    batch_size: int = 256,
    input_key: str | int = "image",
    label_key: str | int | None = "label",
    cue_key: str | int | None = None,
    output_fn=None,
    progress: bool = False,
    num_workers: int = 0,
) -> CounterfactualResult:
    """The model's accuracy on each variant of the data: ``variants`` maps a name to a data set
    (items as in :func:`audit`), e.g. ``{"normal": test, "cue flipped": flipped, "cue removed":
    no_cue}``; the first is the reference the others are compared with. A model that relies on
    the cue loses accuracy when it is moved or removed.

    ``cue_key``: the item key of the class the cue points at (-1 or less: no cue); then each
    variant also reports its cue-following rate, the share of predictions equal to that class.
    Each variant keeps the counts behind both rates, for their Wilson 95% intervals
    (:attr:`~camlens.audit.result.VariantResult.accuracy_interval`). The model runs in eval
    mode without gradients and is left as it was found.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise TypeError("variants must be a non-empty mapping of name -> data set, for example "
                        "{'cue flipped': flipped_data}")
    reader = ItemReader(input_key, label_key, None, cue_key)
    device = model_device(model)
    results = []
    for name, dataset in variants.items():
        labels, predictions, cues = [], [], []
        for batch in stream(dataset, reader, batch_size, num_workers, progress, str(name)):
            inputs = batch.inputs if device is None else batch.inputs.to(device)
            labels.append(batch.labels)
            predictions.append(predicted_classes(model, inputs, output_fn).cpu())
            if batch.cues is not None:
                cues.append(batch.cues)
        label = concatenate(labels, (0,), torch.long)
        predicted = concatenate(predictions, (0,), torch.long)
        labelled = label != NO_LABEL
        right = predicted[labelled] == label[labelled]
        accuracy = float(right.float().mean()) if labelled.any() else None
        following, cue_count, followed = None, 0, 0
        if cue_key is not None:
            cue = concatenate(cues, (0,), torch.long)
            with_cue = cue >= 0
            cue_count = int(with_cue.sum())
            if cue_count:
                follows = predicted[with_cue] == cue[with_cue]
                following, followed = float(follows.float().mean()), int(follows.sum())
        results.append(VariantResult(str(name), len(label), accuracy, following, cue_count,
                                     correct_count=int(right.sum()),
                                     labelled_count=int(labelled.sum()),
                                     following_count=followed))
    return CounterfactualResult(tuple(results))
