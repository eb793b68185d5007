"""Evaluation of explanation methods on the user's own annotated data: the localization,
faithfulness and ROAD table of ``camlens reproduce localization``, one row per method, with 95%
intervals.

    from camlens.evaluation import evaluate
    table = evaluate(model, dataset, methods=("gradcam", "layercam"))
    print(table.to_markdown())       # or .to_csv(), .to_json()
    table.value("gradcam", "maxboxacc")

- :mod:`~camlens.evaluation.protocol`: the columns, their papers and settings, and the per-image
  metric values (shared with ``camlens reproduce localization``);
- :mod:`~camlens.evaluation.work`: :func:`evaluate_batch`, the per-image work any engine maps
  (rows of one image and method);
- :mod:`~camlens.evaluation.table`: :func:`reduce_rows`, rows -> the table with 95% intervals
  (Wilson for proportions, bootstrap for means), as Markdown, CSV or JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from camlens.evaluation.protocol import COLUMNS, METRICS, EvaluationSpec
from camlens.evaluation.table import EvaluationTable, reduce_rows
from camlens.evaluation.work import EvaluationBatch, ImageRow, evaluate_batch

__all__ = ["COLUMNS", "METRICS", "EvaluationBatch", "EvaluationSpec", "EvaluationTable",
           "ImageRow", "batches", "evaluate", "evaluate_batch", "reduce_rows"]


def batches(dataset: Iterable[Mapping[str, Any]], batch_size: int, *, image_key: str = "image",
            label_key: str = "label", boxes_key: str = "boxes", name_key: str = "file"
            ) -> Iterator[EvaluationBatch]:
    """Items (dicts: the input ``(C, H, W)``, its label, its boxes ``(N, 4)`` or ``(4,)`` in
    input pixels, its name) in :class:`EvaluationBatch` es of ``batch_size``; a batch is cut
    where the input size changes."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    pending: list[Mapping[str, Any]] = []
    position = 0

    def flush() -> EvaluationBatch:
        images = torch.stack([item[image_key] for item in pending])
        labels = torch.tensor([int(item.get(label_key, -1)) if item.get(label_key) is not None
                               else -1 for item in pending])
        boxes = [torch.as_tensor(item[boxes_key], dtype=torch.float32).reshape(-1, 4)
                 for item in pending]
        names = [str(item.get(name_key, f"#{position - len(pending) + i}"))
                 for i, item in enumerate(pending)]
        return EvaluationBatch(images, labels, boxes, names)

    for item in dataset:
        if not isinstance(item, Mapping) or image_key not in item or boxes_key not in item:
            raise TypeError(f"evaluate reads dict items with {image_key!r} and {boxes_key!r} "
                            f"(and {label_key!r}); got {type(item).__name__}"
                            + (f" with keys {list(item)}" if isinstance(item, Mapping) else ""))
        if pending and tuple(item[image_key].shape) != tuple(pending[0][image_key].shape):
            yield flush()
            pending = []
        pending.append(item)
        position += 1
        if len(pending) == batch_size:
            yield flush()
            pending = []
    if pending:
        yield flush()


def evaluate(model: nn.Module, dataset: Iterable[Mapping[str, Any]],
             methods: Iterable[str] = ("gradcam",), *, layer: str | None = None,
             batch_size: int = 16, metrics: Iterable[str] = METRICS, tolerance: float = 15.0,
             resamples: int = 1000, seed: int = 0, progress: bool = False,
             **options: Any) -> EvaluationTable:
    """Evaluate ``methods`` on ``model`` over ``dataset`` (see the package docstring).

    ``dataset``: dict items with ``image`` ``(C, H, W)`` as the model takes it, ``label`` (class
    index, -1 or None: none) and ``boxes`` ``(N, 4)`` ``(x0, y0, x1, y1)`` in input pixels
    (:class:`camlens.data.AnnotatedImages` gives them for a folder), optionally ``file``.
    ``metrics``: groups of :data:`METRICS` (all by default); ``tolerance``: the pointing game's,
    in input pixels; ``resamples`` and ``seed``: the bootstrap of the intervals; ``options`` go
    to the methods (``output_fn``, ...). The model is left as it was found.
    """
    spec = EvaluationSpec(tuple(methods), layer, dict(options), tuple(metrics), tolerance)
    rows: list[ImageRow] = []
    bar = None
    if progress:
        from tqdm import tqdm

        total = len(dataset) if hasattr(dataset, "__len__") else None  # type: ignore[arg-type]
        bar = tqdm(total=total, desc="evaluating", unit="image", leave=False)
    try:
        for batch in batches(dataset, batch_size):
            rows.extend(evaluate_batch(model, spec, batch))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    table = reduce_rows(rows, spec, resamples=resamples, seed=seed)
    if not rows:
        table.notes.append("the data set was empty")
    if any(row.label < 0 for row in rows):
        table.notes.append("inputs without a label: the top-1 localization error leaves them "
                           "out; pointing, energy and MaxBoxAcc use the predicted class's map")
    return table
