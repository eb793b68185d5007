"""``GET /api/audit``: a bias audit of a served digit classifier on the built-in biased digits (as
``camlens audit --data biased-digits``: :func:`camlens.audit.audit`), small and bounded: every
record for sorting by region share, and the worst cases per region with their pictures."""

from __future__ import annotations

from typing import Any

import torch

from camlens.serve.catalog import ServedModel
from camlens.serve.encoding import png_data_url

__all__ = ["AUDIT_DATA_NAME", "MAX_AUDIT_SIZE", "MAX_WORST", "audit_record", "check_auditable"]

AUDIT_DATA_NAME = "biased-digits"
#: The most test images one request audits (each counterfactual variant as many again).
MAX_AUDIT_SIZE = 500
#: The most worst cases kept per region.
MAX_WORST = 16


def check_auditable(served: ServedModel) -> None:
    """A ValueError unless ``served`` classifies a ``(1, 1, 64, 64)`` digit canvas into the ten
    digits (the built-in biased digits are such canvases)."""
    from camlens.model_state import preserved_model_state

    digits = tuple(str(d) for d in range(10))
    reason = None
    if served.kind != "image" or served.class_names != digits:
        reason = f"it is {'an' if served.kind == 'image' else 'a'} {served.kind} model with " \
                 f"classes {list(served.class_names or [])[:12]}"
    else:
        try:
            with preserved_model_state(served.loaded.model), torch.no_grad():
                served.loaded.model.eval()
                output = served.loaded.model(torch.zeros(1, 1, 64, 64, device=served.device))
            if not isinstance(output, torch.Tensor) or tuple(output.shape) != (1, 10):
                reason = f"its output on a digit canvas is {getattr(output, 'shape', output)!r}"
        except (RuntimeError, ValueError, TypeError) as error:
            reason = f"it cannot run on a 1x64x64 digit canvas ({error})"
    if reason is not None:
        raise ValueError(f"{served.name} cannot be audited on the built-in biased digits (1x64x64 "
                         f"canvases, ten digit classes): {reason}; audit a digit classifier "
                         "such as digits-biased, digits-gap or digits-fc")


def audit_record(served: ServedModel, size: int, seed: int, method: str, worst: int,
                 counterfactual: bool) -> dict[str, Any]:
    """The audit of ``served`` on ``size`` biased digits: the summary of
    :meth:`~camlens.audit.result.AuditResult.to_dict`, every record (index, label, prediction,
    shares, areas) and per region the ``worst`` inputs with the largest share, each with its
    picture (the map over the input, boxes around the regions)."""
    from camlens.audit import audit
    from camlens.audit.builtin import AUDIT_DATA
    from camlens.audit.report import example_picture

    check_auditable(served)
    data = AUDIT_DATA[AUDIT_DATA_NAME](size, seed)
    result = audit(served.loaded.model, data.dataset, data.regions, method,
                   layer=served.default_layer, keep=worst, class_names=served.class_names,
                   counterfactuals=data.variants if counterfactual else None,
                   cue_key=data.cue_key, batch_size=100)
    row_of = {index: row for row, index in enumerate(result.indices.tolist())}
    cases = {region: [{**result.record(row_of[example.index]),
                       "picture": png_data_url(example_picture(example))}
                      for example in result.examples.get(region, [])[:worst]]
             for region in result.regions}
    return {"model": served.name, "data": AUDIT_DATA_NAME, "description": data.description,
            "size": size, "seed": seed,
            "command": f"camlens audit --model {served.name} --data {AUDIT_DATA_NAME} --size "
                       f"{size} --seed {seed} --method {result.method}",
            **result.to_dict(top=worst), "records": result.records, "worst": cases}
