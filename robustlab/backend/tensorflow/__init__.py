"""TensorFlow implementations of robustlab's backend-specific pieces."""

from robustlab.backend.tensorflow.autodiff import compile_attack
from robustlab.backend.tensorflow.autodiff import input_gradient
from robustlab.backend.tensorflow.autodiff import repeat
from robustlab.backend.tensorflow.curvature import make_hessian_vector_product
from robustlab.backend.tensorflow.curvature import make_loss_gradient
from robustlab.backend.tensorflow.data import batched
from robustlab.backend.tensorflow.data import epoch_shuffled
from robustlab.backend.tensorflow.device import accelerator
from robustlab.backend.tensorflow.directional import make_directional_derivative
from robustlab.backend.tensorflow.distribution import draw_replica_rows
from robustlab.backend.tensorflow.metrics import metrics_in_one_call
from robustlab.backend.tensorflow.threads import cpu_threads
from robustlab.backend.tensorflow.threads import set_cpu_threads
from robustlab.backend.tensorflow.trainer import adversarial_test_step
from robustlab.backend.tensorflow.trainer import adversarial_train_step
from robustlab.backend.tensorflow.trainer import can_observe_iterates_in_step
from robustlab.backend.tensorflow.trainer import steps_function
from robustlab.backend.tensorflow.trainer import wait_for_iterate_observers

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
