"""What the layers learned: activation maximization, input reconstruction from a hidden layer,
representation maps with linear probes, and the transferability of representations (one module
per technique).

- :mod:`~camlens.representations.maximize`: :func:`maximize` the input a unit wants (class
  logit, channel, neuron, direction: :mod:`~camlens.representations.objectives`), with the
  parameterisations, transformations and penalties that make it readable (Erhan et al. 2009;
  Simonyan et al. 2014; Olah et al., Distill 2017);
- :mod:`~camlens.representations.invert`: :func:`invert` a hidden layer's representation back
  to an input (Mahendran and Vedaldi, CVPR 2015);
- :mod:`~camlens.representations.activations`, :mod:`~camlens.representations.embedding`,
  :mod:`~camlens.representations.probes`: a layer's activations over a data set, embedded in
  2-D (PCA, t-SNE, UMAP) and probed linearly per layer (Alain and Bengio 2016);
- :mod:`~camlens.representations.transfer`: transferability by depth (Yosinski et al., NeurIPS
  2014).

Names load on first use (scikit-learn and matplotlib only when asked for).

Example:
    >>> from camlens.representations import ClassLogit, maximize
    >>> result = maximize(model, [ClassLogit(3)], (1, 64, 64))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Channel", "ClassLogit", "Direction", "FourierImage", "InputSpace",
           "InversionResult", "LayerReconstruction", "MaximizationResult", "Neuron",
           "Objective", "PixelImage", "ProbeResult", "RandomTransforms", "embed_2d",
           "fit_probe", "invert", "layer_activations", "maximize", "probe_layers",
           "transfer_experiment"]

_HOMES = {
    "maximize": "maximize", "MaximizationResult": "maximize",
    "invert": "invert", "InversionResult": "invert", "LayerReconstruction": "invert",
    "Channel": "objectives", "ClassLogit": "objectives", "Direction": "objectives",
    "Neuron": "objectives", "Objective": "objectives",
    "FourierImage": "parameterization", "InputSpace": "parameterization",
    "PixelImage": "parameterization", "RandomTransforms": "transforms",
    "layer_activations": "activations", "embed_2d": "embedding",
    "ProbeResult": "probes", "fit_probe": "probes", "probe_layers": "probes",
    "transfer_experiment": "transfer",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"camlens.representations.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'camlens.representations' has no attribute {name!r}")
