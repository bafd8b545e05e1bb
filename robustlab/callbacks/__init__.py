"""Keras callbacks of robustlab: each writes what it measures into `logs`."""

from robustlab.callbacks.robust_evaluation import RobustEvaluation
from robustlab.callbacks.bound_tracker import BoundTracker
from robustlab.callbacks.hessian_probe import HessianProbe
from robustlab.callbacks.hessian_probe import ProbeResult
from robustlab.callbacks.posterior_tracker import PosteriorTracker
from robustlab.training_guards import NonFiniteLossError
from robustlab.training_guards import StopOnNonFiniteLoss

__all__ = [
    "BoundTracker",
    "HessianProbe",
    "NonFiniteLossError",
    "PosteriorTracker",
    "ProbeResult",
    "RobustEvaluation",
    "StopOnNonFiniteLoss",
]
