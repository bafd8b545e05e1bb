"""JAX implementations of robustlab's backend-specific pieces."""

from robustlab.backend.jax.autodiff import compile_attack
from robustlab.backend.jax.autodiff import input_gradient
from robustlab.backend.jax.autodiff import repeat
from robustlab.backend.jax.curvature import make_hessian_vector_product
from robustlab.backend.jax.curvature import make_loss_gradient
from robustlab.backend.jax.data import batched
from robustlab.backend.jax.data import epoch_shuffled
from robustlab.backend.jax.device import accelerator
from robustlab.backend.jax.directional import make_directional_derivative
from robustlab.backend.jax.distribution import draw_replica_rows
from robustlab.backend.jax.metrics import metrics_in_one_call
from robustlab.backend.jax.threads import cpu_threads
from robustlab.backend.jax.threads import set_cpu_threads
from robustlab.backend.jax.trainer import adversarial_test_step
from robustlab.backend.jax.trainer import adversarial_train_step
from robustlab.backend.jax.trainer import can_observe_iterates_in_step
from robustlab.backend.jax.trainer import steps_function
from robustlab.backend.jax.trainer import wait_for_iterate_observers

__all__ = [
    "accelerator",
    "adversarial_test_step",
    "adversarial_train_step",
    "batched",
    "can_observe_iterates_in_step",
    "compile_attack",
    "cpu_threads",
    "draw_replica_rows",
    "epoch_shuffled",
    "input_gradient",
    "make_directional_derivative",
    "make_hessian_vector_product",
    "make_loss_gradient",
    "metrics_in_one_call",
    "repeat",
    "set_cpu_threads",
    "steps_function",
    "wait_for_iterate_observers",
]
