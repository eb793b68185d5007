"""Bias audits: where do a model's maps put their mass over a whole data set?

    from camlens.audit import audit, counterfactual
    result = audit(model, test_data, {"object": "box", "cue": "mark_box"}, method="gradcam")
    result.summary()["regions"]["cue"]    # mean share, mean area share, lift
    result.top("cue", 5)                  # the inputs whose maps lean most on the cue
    checks = counterfactual(model, {"normal": test_data, "cue flipped": flipped})

``camlens.audit.report.write_report`` turns a result into a self-contained HTML page (needs the
``viz`` extra); ``camlens audit`` does all of it from the command line.
"""

import sys
import types
import warnings
from typing import Any

from camlens.audit.core import audit, counterfactual, region_shares
from camlens.audit.result import AuditExample, AuditResult, CounterfactualResult, VariantResult


class _CallableModule(types.ModuleType):
    """``camlens.audit(...)``, the function the package used to export at the top level, still
    runs :func:`camlens.audit.audit`, with a ``DeprecationWarning``."""

    def __call__(self, *args: Any, **kwargs: Any) -> AuditResult:
        warnings.warn("camlens.audit(...) moved to camlens.audit.audit(...); import it from "
                      "there", DeprecationWarning, stacklevel=2)
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "AuditExample",
    "AuditResult",
    "CounterfactualResult",
    "VariantResult",
    "audit",
    "counterfactual",
    "region_shares",
]
