"""robustlab: adversarial training, and the instruments that show why it
overfits.

The public API:

- `PGD`, `AWP`: attack and weight-perturbation configurations.
- `AdversarialModel`: PGD (and AWP) adversarial training inside `model.fit`.
- `attacks`: `pgd`, `fgsm` on any Keras classifier.
- `data.load`: the embedded digits data and tensorflow-datasets datasets.
- `models`: `mlp`, `small_cnn`, `preact_resnet18`.
- `schedules`: learning-rate schedules expressed in epochs.
- `curvature`, `posterior`, `bounds`, `callbacks`: the probes of the course.
- `experiments`, `studies`: the named experiments and the studies that
  reproduce the course's findings over seeds (with shipped reference results).
- `forks`: the weight cloud's width across replicas forked from one state,
  measured against the heavy-ball prediction.
- `plots`: learning curves of a run or of a study.

robustlab runs on the Keras backends TensorFlow (the default) and JAX.
"""

from robustlab import backend as _backend

_backend.check_requested()
_backend.check_supported()

from robustlab import attacks  # noqa: E402
from robustlab import bounds  # noqa: E402
from robustlab import callbacks  # noqa: E402
from robustlab import data  # noqa: E402
from robustlab import experiments  # noqa: E402
from robustlab import forks  # noqa: E402
from robustlab import plots  # noqa: E402
from robustlab import studies  # noqa: E402
from robustlab import curvature  # noqa: E402
from robustlab import models  # noqa: E402
from robustlab import posterior  # noqa: E402
from robustlab import schedules  # noqa: E402
from robustlab.adversarial import AdversarialModel  # noqa: E402
from robustlab.attacks import PGD  # noqa: E402
from robustlab.awp import AWP  # noqa: E402

from robustlab._version import __version__  # noqa: E402

__all__ = [
    "AWP",
    "AdversarialModel",
    "PGD",
    "__version__",
    "attacks",
    "bounds",
    "callbacks",
    "curvature",
    "data",
    "experiments",
    "forks",
    "models",
    "plots",
    "posterior",
    "schedules",
    "studies",
]
