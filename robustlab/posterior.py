"""The posterior cloud of momentum SGD: predicted and measured widths.

SGD does not settle on a minimum: its minibatch gradient noise keeps the
weights moving in a cloud around it, and that cloud is the posterior whose
width enters the course's PAC-Bayes bounds (`robustlab.bounds`). This module
is the entry point to both halves of its study, and re-exports their public
names:

- the theory, in `robustlab.heavy_ball`, predicts the width: along each
  Hessian eigendirection, heavy-ball SGD is a linear system driven by the
  gradient noise, whose weight variance `covariance_recursion` follows step
  by step through a learning-rate schedule (`shuffled_pass_variance`: the
  same from zero over one shuffled pass, whose minibatch noises are
  anticorrelated; `stationary_variance`,
  `stationary_covariance`: its constant-LR limit; `spectral_radius`,
  `relaxation_steps`, `is_stable`, `stability_margin`: how fast, and
  whether, a direction forgets);
- the statistics, in `robustlab.iterate_statistics`, measure it: the
  variance of the iterates of one run over a window (`IterateStatistics`),
  or across replicas forked from one state (`replica_variance`), and the
  noise that drives it, from per-example gradients
  (`minibatch_noise_variance`, the prediction's input;
  `split_gradient_noise`, its between-example and draw-to-draw parts).

A prediction is checked by feeding the measured noise to
`covariance_recursion` and comparing its variance with the measured one, as
`robustlab.callbacks.PosteriorTracker` does during training and
`robustlab.forks` does across replicas. Everything here is pure NumPy.
"""

from robustlab.heavy_ball import CovarianceTrajectory
from robustlab.heavy_ball import covariance_recursion
from robustlab.heavy_ball import is_stable
from robustlab.heavy_ball import relaxation_steps
from robustlab.heavy_ball import shuffled_pass_variance
from robustlab.heavy_ball import spectral_radius
from robustlab.heavy_ball import stability_margin
from robustlab.heavy_ball import stationary_covariance
from robustlab.heavy_ball import stationary_variance
from robustlab.iterate_statistics import GradientNoiseSplit
from robustlab.iterate_statistics import IterateStatistics
from robustlab.iterate_statistics import ReplicaVariance
from robustlab.iterate_statistics import minibatch_noise_variance
from robustlab.iterate_statistics import replica_variance
from robustlab.iterate_statistics import split_gradient_noise

__all__ = [
    "CovarianceTrajectory",
    "GradientNoiseSplit",
    "IterateStatistics",
    "ReplicaVariance",
    "covariance_recursion",
    "is_stable",
    "minibatch_noise_variance",
    "relaxation_steps",
    "replica_variance",
    "shuffled_pass_variance",
    "spectral_radius",
    "split_gradient_noise",
    "stability_margin",
    "stationary_covariance",
    "stationary_variance",
]
