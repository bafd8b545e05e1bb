"""The accelerator JAX computes on, if any.

JAX places its work on its default backend's first device: a GPU or TPU when
one is installed and found, else the CPU.
"""

import jax

__all__ = [
    "accelerator",
]


def accelerator():
    """`"<platform>: <device kind>"` (e.g. `"gpu: NVIDIA H200"`) when JAX's
    default backend is not the CPU, else None."""
    platform = jax.default_backend()
    if platform == "cpu":
        return None
    return f"{platform}: {jax.devices()[0].device_kind}"
