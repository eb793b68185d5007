"""Evaluate explanations: localization, pointing, faithfulness and sanity checks.

All metrics are batched torch and run on the tensors' device (CPU or CUDA):

- :mod:`~camlens.metrics.localization`: the CAM / Grad-CAM box protocol (largest connected
  component above a fraction of the maximum, IoU >= 0.5 with the right class) and MaxBoxAcc
  (Choe et al., CVPR 2020: the best threshold of the ground-truth-known box accuracy);
- :mod:`~camlens.metrics.pointing`: the pointing game (Zhang et al.) and the energy-based
  pointing game (Score-CAM);
- :mod:`~camlens.metrics.faithfulness`: RISE deletion/insertion and Grad-CAM++ average
  drop/increase in confidence;
- :mod:`~camlens.metrics.road_metric`: ROAD (remove and debias: noisy linear imputation, MoRF and
  LeRF; Rong et al., ICML 2022);
- :mod:`~camlens.metrics.intervals`: 95% intervals (Wilson for proportions, the percentile
  bootstrap for means over items, Student's t over training seeds);
- :mod:`~camlens.metrics.sanity`: cascading and independent model-parameter randomization
  (Adebayo et al.), Spearman rank correlation (signed or of absolute values);
- :mod:`~camlens.metrics.ssim`: SSIM between maps (Wang et al. 2004, Gaussian window), as the
  sanity checks compare them.
"""

from camlens.metrics.faithfulness import (
    PerturbationCurves,
    average_drop_increase,
    deletion_insertion,
    gaussian_blur,
)
from camlens.metrics.intervals import bootstrap_interval, seed_interval, wilson_interval
from camlens.metrics.localization import (
    BOX_ACCURACY_THRESHOLDS,
    MAP_CONVENTIONS,
    box_accuracy_hits,
    box_iou,
    box_masks,
    center_box,
    connected_components,
    full_image_box,
    largest_component_boxes,
    localization_error,
    localization_hits,
    max_box_accuracy,
    scale_maps,
)
from camlens.metrics.pointing import (
    class_mean_accuracy,
    energy_pointing_game,
    pointing_accuracy,
    pointing_game,
)
from camlens.metrics.road_metric import ROADScores, noisy_linear_imputation, road, road_scores
from camlens.metrics.sanity import (
    cascading_randomization,
    independent_randomization,
    randomization_steps,
    spearman,
)
from camlens.metrics.ssim import ssim

__all__ = [
    "BOX_ACCURACY_THRESHOLDS",
    "MAP_CONVENTIONS",
    "PerturbationCurves",
    "ROADScores",
    "noisy_linear_imputation",
    "road",
    "road_scores",
    "average_drop_increase",
    "bootstrap_interval",
    "box_accuracy_hits",
    "box_iou",
    "box_masks",
    "cascading_randomization",
    "class_mean_accuracy",
    "center_box",
    "connected_components",
    "deletion_insertion",
    "energy_pointing_game",
    "seed_interval",
    "wilson_interval",
    "full_image_box",
    "gaussian_blur",
    "independent_randomization",
    "largest_component_boxes",
    "localization_error",
    "localization_hits",
    "max_box_accuracy",
    "pointing_accuracy",
    "pointing_game",
    "scale_maps",
    "randomization_steps",
    "spearman",
    "ssim",
]
