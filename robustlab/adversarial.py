"""PGD adversarial training inside `keras.Model.fit`.

`AdversarialModel` wraps a user's unchanged classifier. `compile` and `fit`
then train on PGD examples crafted in the same compiled step (Madry et al.
2018), optionally with adversarial weight perturbation (`robustlab.AWP`);
`evaluate` and validation report both clean and robust numbers.

What lands in `logs` (and so in History, CSVLogger and TensorBoard):

- training: `loss`, the objective the optimizer minimises (the loss on the
  adversarial batch plus regularisation losses; with AWP, at the perturbed
  weights w + v; NaN from a step whose update leaves a weight NaN or inf,
  which stops `fit` with `NonFiniteLossError`); `robust_loss`, the data
  loss on the adversarial batch at the weights w; `robust_<metric>` for
  each compiled metric, on the adversarial batch at w. With AWP also
  `awp_perturbed_loss` (the data loss at w + v) and `awp_gamma` (the gamma
  in force).
- evaluation (and `val_` in fit): `loss` (robust objective, for
  EarlyStopping/ModelCheckpoint defaults), `robust_loss`, `robust_<metric>`
  under the evaluation attack, and `clean_loss`, `clean_<metric>` on the
  unperturbed inputs.

The attack's random starts come from seed generators that are part of the
model's state (saved with its weights and by `BackupAndRestore`), as are
the seeds of the wrapped model's random layers (Dropout's masks; Keras
itself saves no layer's seed), and NumPy training data is shuffled by a
fixed function of (seed, epoch), so the same seed gives the same numbers,
also across an interrupted and resumed fit.
"""

import contextlib
import inspect
import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

from robustlab import _keras_compat
from robustlab import attacks
from robustlab import backend as _backend
from robustlab import losses
from robustlab import model_validation
from robustlab import validation
from robustlab.awp import AWP
from robustlab.awp import layerwise_relative_perturbation
from robustlab.awp import zero_on_overflow
from robustlab.iterate_observers import IterateObservers
from robustlab.shuffling import ReusedEpochData
from robustlab.training_guards import AWPGammaFromConfig
from robustlab.training_guards import StopOnNonFiniteLoss

__all__ = [
    "AdversarialModel",
]

_ACCURACY_ALIASES = ("accuracy", "acc")
# The keys of the wrapped model's seed states in a saved AdversarialModel.
_MODEL_SEED = "model_seed_state_"


@keras.saving.register_keras_serializable(package="robustlab")
class AdversarialModel(_keras_compat.EpochLogsFromMetrics, keras.Model):
    """Adversarial training of a Keras classifier inside `fit`.

    Args:
        model: the classifier to train, a built `keras.Model` with one
            `(batch, classes)` output (logits or probabilities: the loss given
            to `compile` says which). It is used unchanged; its weights are
            the weights of this model.
        attack: the training attack, a `robustlab.PGD`.
        eval_attack: the attack of `evaluate` and validation; defaults to
            `attack`.
        awp: optional `robustlab.AWP` (adversarial weight perturbation).
        seed: seeds the attacks' random starts and the epoch order of NumPy
            training data.
        attack_training_mode: call the model with `training=True` while
            crafting (BatchNorm normalises with batch statistics, Dropout is
            active); the state these passes write is discarded (see below).

    State contract (both attack modes, both backends):

    - Crafting, for training and for evaluation, changes no variable of the
      model except the attack's seed (`attack_seed_variables`): the
      BatchNorm moving statistics and Dropout's seed are left as they were.
    - A training step moves BatchNorm's statistics (and Dropout's seed)
      exactly as one training forward pass at the adversarial batch does.
    - `evaluate` (and validation) changes no weight and no statistic; only
      the evaluation attack's seed advances, so that successive validations
      draw fresh random starts.
    - TensorFlow and JAX give the same numbers within float tolerance where
      no random number is drawn; Keras's random generators differ between
      the backends, so random starts and Dropout masks do not agree across
      them (each is reproducible on its own backend from the seed).
    - Under data parallelism (`tf.distribute.MirroredStrategy`,
      `keras.distribution.DataParallel`; tested on two devices, with random
      starts): crafting and `evaluate` keep the first and third points on
      every device, a step of `fit` keeps the second (on each device: it
      moves the statistics as one training forward pass at its adversarial
      batch, split over the devices as the step splits it, does), the
      replicas start from the noise one device draws for the whole batch
      and the attack seeds advance as on one device, so training agrees
      with one device's within float tolerance (tested without BatchNorm
      and Dropout, with and without AWP). On TensorFlow, BatchNorm and
      Dropout act per replica (Keras's behaviour there: each replica
      normalises with its shard's statistics and moves its own copy of the
      moving statistics, and Dropout draws every replica's mask from the
      same seed state), so the second point, and crafting with
      `attack_training_mode`, hold per replica, not for the global batch.
      Keras's `train_on_batch` under `tf.distribute` hands every replica the
      whole batch rather than a shard; `fit` splits it. Keras's limits
      under data parallelism apply as they are: every batch, the last of an
      epoch included, must split evenly over the devices (a batch of 31 on
      two devices fails inside Keras on both backends), and on TensorFlow
      `steps_per_execution` > 1 under `MirroredStrategy` fails as it does
      for a plain Keras model.

    Speed: on TensorFlow, an epoch of the digits setting (16 steps of PGD-3)
    inside a many-epoch `fit` took 0.99x the time of a hand-written
    `tf.function` loop on 2 CPU cores (`benchmarks/README.md`): `fit` keeps
    one iterator over NumPy data for the whole call (and from one call to
    the next: `fit(..., epochs=e + 1, initial_epoch=e)` in a loop over e
    took 1.06-1.13x; the seeded batch order is a function of (seed, epoch),
    so a loop of `fit(epochs=1)` without `initial_epoch` trains on epoch 0's
    order at every call) and runs each step in a
    single `tf.function`. `compile(..., steps_per_execution=k)` runs k
    training steps in one compiled call (0.95x with k = 16) and trains to
    the same weights bit for bit (tested on both backends, a short last
    batch included); on JAX it made no measurable difference. Per-batch
    callbacks then see one batch in k; an instrument that needs every
    iterate registers with `observe_iterates`, as `PosteriorTracker` does,
    and receives each one from inside the compiled step.
    (`robustlab.experiments.run` uses a whole epoch a call unless a
    callback of yours has a per-batch hook.)

    Example:

    >>> import numpy as np, keras, robustlab
    >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                         keras.layers.Dense(10)])
    >>> model = robustlab.AdversarialModel(net, attack=robustlab.PGD(0.1, steps=3))
    >>> model.compile(optimizer="sgd", metrics=["accuracy"],
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).random((64, 8, 8, 1), dtype="float32")
    >>> y = np.arange(64) % 10
    >>> history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'robust_accuracy', 'robust_loss']
    >>> sorted(model.evaluate(x, y, verbose=0, return_dict=True))
    ['clean_accuracy', 'clean_loss', 'loss', 'robust_accuracy', 'robust_loss']
    """

    def __init__(
        self,
        model,
        attack,
        eval_attack=None,
        awp=None,
        seed=0,
        attack_training_mode=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Argument `model` must be a keras.Model. "
                f"Received: model={type(model).__name__}"
            )
        if not isinstance(attack, attacks.PGD):
            raise TypeError(
                "Argument `attack` must be a robustlab.PGD. "
                f"Received: attack={attack!r}"
            )
        if eval_attack is not None and not isinstance(eval_attack, attacks.PGD):
            raise TypeError(
                "Argument `eval_attack` must be a robustlab.PGD or None. "
                f"Received: eval_attack={eval_attack!r}"
            )
        if awp is not None and not isinstance(awp, AWP):
            raise TypeError(
                f"Argument `awp` must be a robustlab.AWP or None. Received: awp={awp!r}"
            )
        seed = validation.check_seed("seed", seed)
        self.model = model
        self.attack = attack
        self.eval_attack = eval_attack or attack
        self.awp = awp
        self.seed = seed
        self.attack_training_mode = validation.check_bool(
            "attack_training_mode", attack_training_mode)
        self._train_seed = keras.random.SeedGenerator(seed, name="train_attack_seed")
        self._eval_seed = keras.random.SeedGenerator(
            seed + 1_000_003, name="eval_attack_seed"
        )
        self._iterate_observers = IterateObservers()
        # The train functions built for the current compiled setting, with
        # the iterate hand-off (True) and without (False): valid while
        # `train_function` is one of them.
        self._kept_train_functions = {}
        self._epoch_data = ReusedEpochData()
        self._training_stream = None
        self._fit_depth = 0
        # A model with open input axes (images of any size) is checked on
        # its data, in `fit` and `evaluate`.
        model_validation.check_single_input(model)
        example = model_validation._declared_input_example(model)
        if example is not None:
            model_validation.check_classifier(model, example)
        if awp is not None:
            # A selection that matches nothing fails here (or at `build` for
            # an unbuilt model); each step selects again over the variables
            # trainable then.
            if model.built:
                awp.select(model.trainable_variables)
            self.awp_gamma = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(awp.gamma_at(0)),
                trainable=False,
                name="awp_gamma",
            )
        self.built = model.built

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)
        if self.awp is not None:
            self.awp.select(self.model.trainable_variables)
        self.built = True

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # -- compile -------------------------------------------------------------

    @_keras_compat.no_automatic_dependency_tracking
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `keras.Model.compile`; `loss` is required (a classification
        loss), `metrics` are computed twice in evaluation (`robust_` and
        `clean_` prefixes) and on the adversarial batch in training.

        Each metric (a name, a `keras.metrics.Metric` or a function
        `(y_true, y_pred) -> values`) is copied for the two, as Keras copies
        a metric: from its config. A metric class of your own must return
        every argument of its `__init__` from `get_config`; one whose copy
        would differ is refused."""
        if loss is None:
            raise ValueError(
                "Argument `loss` of AdversarialModel.compile is required: the "
                "attack ascends it and training descends it. Received: loss=None"
            )
        if "weighted_metrics" in kwargs and kwargs["weighted_metrics"]:
            raise ValueError(
                "AdversarialModel computes its metrics with sample weights "
                "when given; pass them as `metrics`. Received: weighted_metrics="
                f"{kwargs['weighted_metrics']!r}"
            )
        kwargs.pop("weighted_metrics", None)
        reduction = model_validation.loss_reduction(loss)
        if reduction in (None, "none"):
            # TensorFlow's gradient of per-example losses is that of their sum
            # (steps B times those of the mean, silently); JAX's grad refuses
            # them ("Gradient only defined for scalar-output functions").
            raise ValueError(
                "Argument `loss` of AdversarialModel.compile must reduce the batch to "
                "one number, which training descends: compile it with reduction "
                "'sum_over_batch_size' (Keras's default), 'mean' or 'sum'. "
                f"Received: loss with reduction={reduction!r}")
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            # A string would be read letter by letter.
            raise TypeError(
                "Argument `metrics` must be a list of metrics, e.g. "
                f"metrics=['accuracy']. Received: metrics={metrics!r}")
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        metrics = list(metrics or [])
        self._robust_metrics = [_make_metric(m, "robust_") for m in metrics]
        self._clean_metrics = [_make_metric(m, "clean_") for m in metrics]
        self._robust_loss_tracker = keras.metrics.Mean(name="robust_loss")
        self._clean_loss_tracker = keras.metrics.Mean(name="clean_loss")
        self._awp_loss_tracker = (
            keras.metrics.Mean(name="awp_perturbed_loss") if self.awp else None
        )
        # With a loss given, the labels' kind plays no part in it.
        self._attack_loss = attacks.attack_loss(self.model, None, loss=loss)
        # Keras saved metrics=None (they were not passed to it): save ours.
        _keras_compat.saved_compile_arguments(self)["metrics"] = metrics

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; this one's
        # compile takes exactly the saved arguments.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        if not self.compiled:
            return []
        own = [
            _keras_compat.loss_tracker(self), self._robust_loss_tracker,
            self._clean_loss_tracker,
        ]
        if self._awp_loss_tracker is not None:
            own.append(self._awp_loss_tracker)
        return own + self._robust_metrics + self._clean_metrics

    @property
    def metrics_names(self):
        """The names of the values `evaluate` returns, in their order, so
        that `dict(zip(model.metrics_names, model.evaluate(...)))` pairs
        them (Keras's lists every metric, `awp_perturbed_loss` too, which
        only training logs)."""
        return [m.name for m in self.metrics if m is not self._awp_loss_tracker]

    # -- the pieces the backend's train and test steps compose ---------------

    def craft_adversarial_batch(self, x, y, training_attack=True):
        """PGD examples for a batch at the current weights, in the graph."""
        attack = self.attack if training_attack else self.eval_attack
        seed = self._train_seed if training_attack else self._eval_seed
        mode = self.attack_training_mode
        # Every write of the attack's forward passes (BatchNorm statistics and
        # Dropout's seed in training mode, or values traced inside the
        # attack's loop and gradient on JAX) lands in a scope that is thrown
        # away; only the attack seed's advance is carried out. The scope maps
        # each variable to the value it has where crafting is called, which
        # inside the JAX steps is the step's state, not the variable's.
        mapping = [(v, v.value) for v in self.variables]
        state = dict((id(v), value) for v, value in mapping)[id(seed.state)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            x_adv = attacks.perturb(
                lambda z, t: self._attack_loss(z, t, training=mode), x, y, attack, seed
            )
        new_state = scope.get_current_value(seed.state)
        # Written only when drawn from (no random start: no write). Under
        # tf.distribute each replica writes its own copy of the mirrored seed
        # (aggregation "none"): the same advance everywhere, as every replica
        # draws for the whole batch (robustlab.backend.tensorflow.distribution).
        if new_state is not state:
            seed.state.assign(new_state)
        return x_adv

    @property
    def attack_seed_variables(self):
        """The variables an attack updates (its seed states)."""
        return (self._train_seed.state, self._eval_seed.state)

    @contextlib.contextmanager
    def attack_seeds_preserved(self):
        """Run evaluations that must leave no trace: the attack seeds and the
        metrics' state are restored on exit, so an instrument's own
        `evaluate` does not change the random starts of the next validation
        pass (nor anything logged after it), nor what `get_metrics_result()`
        reports after `fit`."""
        self._attach_jax_state()
        # The metrics' state too: after `fit`, `get_metrics_result()` must
        # give the last validation's numbers, not an instrument's.
        variables = list(self.attack_seed_variables) + list(self.metrics_variables)
        saved = [keras.ops.convert_to_numpy(v.value).copy() for v in variables]
        try:
            yield
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)

    def awp_perturbation(self, weights, gradients, gamma):
        """AWP's v for the trainable weights (None where not perturbed).

        The selection is made over the variables trainable now, not at build:
        a variable frozen since (or unfrozen) is left out (or taken in) as if
        it had been so from the start, and a frozen variable is never
        perturbed. Under a `keras.optimizers.LossScaleOptimizer` the
        gradients are the scaled loss's, and where any is not finite v is 0
        (`robustlab.awp.zero_on_overflow`).
        """
        mask = self.awp.select(self.trainable_variables)
        if len(mask) != len(weights):
            raise ValueError(
                "AWP's perturbation needs one weight per trainable variable of "
                f"the model ({len(mask)}); the trainable variables changed inside "
                "a compiled step. Received: len(weights)="
                f"{len(weights)}"
            )
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # The loss-scaled gradients overflow now and then, by design; v
            # is then 0 and the optimizer skips the step (`zero_on_overflow`).
            gradients = zero_on_overflow(gradients)
        return layerwise_relative_perturbation(weights, gradients, gamma, mask)

    def data_loss(self, y, y_pred, sample_weight=None):
        """The compiled loss alone (no regularisation losses), as the mean
        over the whole batch also under a distribution strategy (Keras
        divides each replica's loss by the number of replicas)."""
        return _keras_compat.unscale_loss_for_distribution(
            _keras_compat.compiled_loss_function(self)(y, y_pred, sample_weight)
        )

    def update_training_metrics(
        self, y, y_pred, sample_weight, objective, batch_size, perturbed_loss=None,
        gamma=None, weights_finite=None,
    ):
        """Update the training metrics; `y_pred` is at the weights w.
        `weights_finite` (`all_finite` of the weights after the step's
        update) False makes the logged loss NaN."""
        if weights_finite is not None:
            # A step that leaves a weight NaN or inf has diverged even where
            # its loss is finite (TensorFlow's oneDNN kernel of a fused
            # MatMul + BiasAdd + Relu maps NaN to 0): the NaN goes into the
            # running mean, where `StopOnNonFiniteLoss` finds it, also at
            # the end of a compiled call of several steps (a non-finite
            # weight stays so through every later update).
            objective = ops.where(weights_finite, objective, float("nan"))
        loss_tracker = _keras_compat.loss_tracker(self)
        loss_tracker.update_state(objective, sample_weight=batch_size)
        self._robust_loss_tracker.update_state(
            self.data_loss(y, y_pred, sample_weight), sample_weight=batch_size
        )
        for metric in self._robust_metrics:
            metric.update_state(y, y_pred, sample_weight=sample_weight)
        logs = {
            "loss": loss_tracker.result(),
            "robust_loss": self._robust_loss_tracker.result(),
        }
        logs.update({m.name: m.result() for m in self._robust_metrics})
        if perturbed_loss is not None:
            self._awp_loss_tracker.update_state(perturbed_loss, sample_weight=batch_size)
            logs["awp_perturbed_loss"] = self._awp_loss_tracker.result()
            logs["awp_gamma"] = gamma
        return logs

    @staticmethod
    def all_finite(values):
        """Whether every entry of every tensor in `values` is finite: one
        boolean, reduced in the graph (no host sync)."""
        return ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in values]))

    def evaluate_batch(self, x, y, sample_weight=None):
        """Clean and robust evaluation of one batch; returns the logs."""
        x_adv = self.craft_adversarial_batch(x, y, training_attack=False)
        y_clean = self(x, training=False)
        y_adv = self(x_adv, training=False)
        batch_size = ops.shape(x)[0]
        objective = _keras_compat.unscale_loss_for_distribution(
            _keras_compat.compute_loss(self, x_adv, y, y_adv, sample_weight, training=False)
        )
        loss_tracker = _keras_compat.loss_tracker(self)
        loss_tracker.update_state(objective, sample_weight=batch_size)
        self._robust_loss_tracker.update_state(
            self.data_loss(y, y_adv, sample_weight), sample_weight=batch_size
        )
        self._clean_loss_tracker.update_state(
            self.data_loss(y, y_clean, sample_weight), sample_weight=batch_size
        )
        for metric in self._robust_metrics:
            metric.update_state(y, y_adv, sample_weight=sample_weight)
        for metric in self._clean_metrics:
            metric.update_state(y, y_clean, sample_weight=sample_weight)
        trackers = [loss_tracker, self._robust_loss_tracker, self._clean_loss_tracker]
        return {
            m.name: m.result()
            for m in trackers + self._robust_metrics + self._clean_metrics
        }

    # -- iterates handed to the host from inside the compiled step --------------

    @property
    def iterate_observers(self):
        """The `robustlab.iterate_observers.IterateObservers` the compiled
        training step calls (see `observe_iterates`)."""
        return self._iterate_observers

    def observe_iterates(self, observer, variables):
        """During the current `fit`, call `observer(learning_rate, weights)`
        on the host after every optimizer step, from inside the compiled step:
        `learning_rate` is the rate the step used (a float), `weights` the
        values of `variables` (trainable variables of this model) after it, as
        NumPy arrays valid only during the call. Every step is seen, in
        order, whatever `steps_per_execution`. Meant for a callback's
        `on_train_begin`; the observer is removed when `fit` returns or
        raises. It must not raise (keep an error and report it on the host).

        Returns:
            True when registered; False where the step cannot hand values to
            the host (TensorFlow with `jit_compile=True`, or a model built
            under a `tf.distribute` strategy, fitted inside its scope or
            not; JAX under a Keras distribution): then read the weights in
            a per-batch callback, with `steps_per_execution=1`.
        """
        if not callable(observer):
            raise TypeError("Argument `observer` must be callable as "
                            f"observer(learning_rate, weights). Received: observer={observer!r}")
        # A single variable would be iterated by its rows.
        if (not isinstance(variables, (list, tuple))
                or not all(isinstance(v, keras.Variable) for v in variables)):
            raise TypeError("Argument `variables` must be a list of the model's "
                            f"trainable variables. Received: variables={variables!r}")
        if not _backend.get().can_observe_iterates_in_step(self):
            return False
        self._iterate_observers.add(observer, list(variables), self.trainable_variables)
        if (self.train_function is not None
                and self.train_function is not self._kept_train_functions.get(True)):
            self._switch_train_function(handoff=True)
        return True

    def _switch_train_function(self, handoff):
        """Make `train_function` the one with (or without) the iterate
        hand-off: the kept one, which has traced already, or a new one. A
        train function not among the kept ones (set from outside, e.g.
        restored by `forks`) is not known to be the current setting's kept
        pair: both are built again."""
        kept = self._kept_train_functions
        if self.train_function is None or all(
                self.train_function is not f for f in kept.values()):
            self._kept_train_functions = {}
        return self._use_train_function(handoff)

    def _use_train_function(self, handoff):
        kept = self._kept_train_functions
        if handoff not in kept:
            # The hand-off is fixed here, not read when the step is traced:
            # JAX's jit would hand a rebuilt function a cached trace.
            step = self._iterate_observers.tracing_step(self.train_step, handoff)
            kept[handoff] = self._counting_batches_read(
                self._steps_function("train", step, True))
        self.train_function = kept[handoff]
        return self.train_function

    def reset_metrics(self):
        """As Keras's. On TensorFlow, Keras's own metrics are reset in one
        compiled call (with the read in `get_metrics_result`, about 1 ms an
        epoch less on two CPU cores); the values are the same."""
        self._attach_jax_state()
        metrics = self._metrics_in_one_call()
        if metrics is None:
            return super().reset_metrics()
        metrics.reset()

    def get_metrics_result(self):
        """As Keras's. On TensorFlow, Keras's own metrics are read in one
        compiled call; the values are the same bit for bit."""
        self._attach_jax_state()
        metrics = self._metrics_in_one_call()
        if metrics is None:
            return super().get_metrics_result()
        return metrics.results()

    def _metrics_in_one_call(self):
        kept = getattr(self, "_kept_metrics_in_one_call", None)
        if kept is not None and kept.serves(self.metrics):
            return kept
        kept = _backend.get().metrics_in_one_call(self)
        self._kept_metrics_in_one_call = kept
        return kept

    def make_train_function(self, force=False):
        """As Keras's. On TensorFlow without XLA or a distribution strategy,
        one step a call reads the batch and runs the step in a single
        `tf.function` that returns the logs (Keras's nests a second one and
        wraps the logs for the host to unpack: 0.7 ms a step more on two
        CPU cores); several steps a call run in a loop in the graph, as
        Keras's do. The numbers are the same bit for bit, and a process that
        fits several models briefly logs no retracing warning (each model
        traces its own function)."""
        if self.train_function is not None and not force:
            return self.train_function
        # Built for a new setting (after `compile`, say): the kept ones are
        # of the old one.
        self._kept_train_functions = {}
        return self._use_train_function(bool(self._iterate_observers))

    def _counting_batches_read(self, function):
        """`function`, telling the stream of epochs `fit` reads (if it keeps
        its iterator between calls) how many batches each call read, or
        that a call failed, so that it hands the iterator to the next `fit`
        only where it stands at that call's first batch."""

        def train_function(*args, **kwargs):
            stream = self._training_stream
            if stream is None:
                return function(*args, **kwargs)
            try:
                logs = function(*args, **kwargs)
            except BaseException:
                stream.abandon(args[0])
                raise
            stream.batches_read(args[0], self.steps_per_execution)
            return logs

        return train_function

    def make_test_function(self, force=False):
        """As Keras's; on TensorFlow, as `make_train_function`'s."""
        if self.test_function is not None and not force:
            return self.test_function
        self.test_function = self._steps_function("test", self.test_step, force)
        return self.test_function

    def make_predict_function(self, force=False):
        """As Keras's; on JAX, one that keeps the state when an exception
        ends a call (`backend.steps_function`), else Keras's own, as in
        `_input_state_kept`."""
        if self.predict_function is not None and not force:
            return self.predict_function
        # TensorFlow's steps functions run the train and test steps only.
        step = self.predict_step if _backend.name() == "jax" else None
        self.predict_function = self._steps_function("predict", step, force)
        return self.predict_function

    def _steps_function(self, kind, step, force):
        """The backend's function running `step` (`backend.steps_function`),
        or, where it gives none (or `step` is None), Keras's own `kind`
        function as `_input_state_kept` wraps it."""
        function = None if step is None else _backend.get().steps_function(self, step)
        if function is None:
            getattr(super(), f"make_{kind}_function")(force=force)  # sets it; may return None
            function = self._input_state_kept(getattr(self, f"{kind}_function"))
        return function

    def _input_state_kept(self, function):
        """On JAX, Keras's own train, test or predict `function` (where
        `backend.steps_function` gives none), which attaches the state it
        received to the variables when it raises before a step took that
        state's buffers (an error or an interrupt while the data is read):
        Keras's loop holds that state only in a local variable, and after a
        validation pass (or at the first batch of a call) it had kept no
        other, so the variables stayed detached. Elsewhere `function`."""
        if _backend.name() != "jax":
            return function

        def kept(state, iterator):
            try:
                return function(state, iterator)
            except BaseException:
                if _keras_compat.holds_live_values(state):
                    _keras_compat.attach_jax_state(self, state)
                raise

        return kept

    def train_step(self, *args):
        return _backend.get().adversarial_train_step(self, *args)

    def test_step(self, *args):
        return _backend.get().adversarial_test_step(self, *args)

    # -- AWP gamma -------------------------------------------------------------

    def set_awp_gamma(self, gamma):
        """Set AWP's gamma for the following steps (no retracing), also
        from a callback that holds the model rather than reading
        `Callback.model`. Call it from the thread that runs `fit` (any
        callback but an `async_safe` one): on JAX it attaches the running
        fit's state to the variables first, which from another thread would
        race the next step."""
        if self.awp is None:
            raise ValueError(
                "This AdversarialModel has no AWP; construct it with "
                f"`awp=robustlab.AWP(...)`. Received: gamma={gamma!r}"
            )
        gamma = validation.check_finite_at_least("gamma", gamma, 0.0)
        # On JAX, mid-epoch, the variable is detached: the steps carry gamma
        # in their state, and the epoch's end would attach the old one again.
        self._attach_jax_state()
        self.awp_gamma.assign(gamma)

    def _attach_jax_state(self):
        """On JAX, attach the state of a running (or interrupted) `fit`,
        `evaluate` or `predict` to the variables, as `Callback.model` does,
        so that this model's own methods read and write the variables the
        next step reads (Keras then takes the state from them again); a
        no-op where they hold it, and on TensorFlow."""
        if _backend.name() == "jax":
            _keras_compat.sync_jax_state(self)

    # -- fit / evaluate: validation, seeded epoch order, NaN guard -----------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None,
            shuffle=True, validation_split=0.0, validation_data=None,
            sample_weight=None, validation_batch_size=None, **kwargs):
        """As `keras.Model.fit`. NumPy training data is checked (value range,
        labels) as a whole; a `tf.data.Dataset`, a `keras.utils.PyDataset`
        or a generator batch by batch as it is read (a list, tuple or dict
        of inputs is refused: the classifier takes one input). With NumPy
        data or a `tf.data.Dataset`, `class_weight` (keys: class indices of
        the model) becomes per-example weights, 1 for a class it leaves out,
        as Keras weighs NumPy data; it is refused together with
        `sample_weight` (or a pipeline's sample weights). NumPy data
        is served in the seeded order of
        `robustlab.shuffling.epoch_shuffled_batches` (when `shuffle`; with
        `steps_per_epoch`, each epoch trains on the first so many batches of
        its order), NumPy validation data through a pipeline built once. A
        `keras.utils.PyDataset` is served in Keras's own order: with
        `shuffle=True` Keras shuffles its batches with Python's global
        `random`, so seed that (`random.seed`) or pass `shuffle=False` for a
        run that repeats its numbers. A
        non-finite loss, or a step that leaves a weight non-finite, stops
        training with `NonFiniteLossError`. The training data built for
        NumPy arrays (up to 64 MiB) is kept for the next call with arrays
        of the same content (`robustlab.shuffling.ReusedEpochData`), so
        that a loop of one-epoch calls does not pay for building it every
        epoch; such a loop passes `epochs=e + 1, initial_epoch=e` (the
        order is a function of (seed, epoch): without `initial_epoch`,
        every call trains on epoch 0's order); on TensorFlow,
        with its iterator, which a call that starts at the epoch the
        iterator stands at reads on from (the batches are those of a new
        one, bit for bit)."""
        callbacks = list(callbacks or [])
        backend = _backend.get()
        stream = None
        _check_fit_counts(batch_size, validation_batch_size, epochs, kwargs)
        # As Keras: the validation batch defaults to the training batch. Read
        # here, since array inputs are turned into batched datasets below.
        array_validation_batch = validation_batch_size or batch_size or 32
        validation_split = _check_validation_split(validation_split, x)
        shuffle = validation.check_bool("shuffle", shuffle)
        x, y, sample_weight = (_as_numpy(a) for a in (x, y, sample_weight))
        _check_data_type(x, "x")
        if isinstance(validation_data, (tuple, list)):
            validation_data = tuple(_as_numpy(a) for a in validation_data)
            if len(validation_data) not in (2, 3):
                raise ValueError(
                    "Argument `validation_data` must be a tuple (x_val, y_val) or "
                    "(x_val, y_val, sample_weight_val). Received: validation_data "
                    f"of length {len(validation_data)}")
            _check_data_type(validation_data[0], "validation_data[0]")
        if _is_array(x):
            num_classes = self._check_arrays(
                x, y, "x", "y", self.attack, sample_weight, "sample_weight")
            class_weight = kwargs.pop("class_weight", None)
            model_validation.check_class_weight(class_weight, num_classes, sample_weight)
            # As Keras: validation_data, when given, overrides validation_split.
            if validation_split and validation_data is None:
                split = int(len(x) * (1.0 - validation_split))
                if split in (0, len(x)):
                    raise ValueError(
                        f"Argument `validation_split` must leave at least one "
                        f"example on each side of the split of the {len(x)} "
                        f"examples. Received: validation_split={validation_split!r}")
                validation_data = (x[split:], y[split:])
                x, y = x[:split], y[:split]
                if sample_weight is not None:
                    sample_weight = np.asarray(sample_weight)
                    validation_data += (sample_weight[split:],)
                    sample_weight = sample_weight[:split]
            if class_weight is not None:
                # Keras would weight NumPy data in its pipeline, whose table
                # of weights ends at the largest class named: a label beyond
                # it fails there on TensorFlow. After the split: as in Keras,
                # validation data is not class-weighted.
                sample_weight = model_validation.class_weights_per_example(
                    class_weight, y, num_classes)
            validation_split = 0.0
            batch_size = batch_size or 32
            if shuffle:
                x, epoch_callback, kwargs["steps_per_epoch"] = self._epoch_data(
                    x, y, sample_weight, batch_size, self.seed,
                    kwargs.get("steps_per_epoch"), self.steps_per_execution)
                callbacks.append(epoch_callback)
                stream = epoch_callback.stream
            else:
                arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
                x = backend.batched(arrays, batch_size)
            if not isinstance(x, tuple):
                y = sample_weight = batch_size = None
            else:
                x, y, sample_weight = (tuple(x) + (None,))[:3]
            shuffle = False  # the order is set above; Keras must not change it
        elif model_validation.is_tf_dataset(x):
            x = model_validation.checked_dataset(
                x, self.model, self.attack.value_range,
                class_weight=kwargs.pop("class_weight", None), loss=self.loss)
        else:
            x = model_validation.checked_batches(x, self.model, self.attack.value_range,
                                                 loss=self.loss)
        if isinstance(validation_data, (tuple, list)) and _is_array(validation_data[0]):
            self._check_arrays(validation_data[0], validation_data[1],
                               "validation_data[0]", "validation_data[1]", self.eval_attack,
                               (validation_data + (None,))[2], "validation_data[2]")
            validation_data = model_validation.mark_checked(backend.batched(
                tuple(validation_data), array_validation_batch))
            # On JAX the arrays are served as they are, and Keras batches them.
            validation_batch_size = (array_validation_batch
                                     if isinstance(validation_data, tuple) else None)
        elif model_validation.is_tf_dataset(validation_data):
            validation_data = model_validation.checked_dataset(
                validation_data, self.model, self.eval_attack.value_range,
                "validation_data[0]", "validation_data[1]", loss=self.loss)
        else:
            validation_data = model_validation.checked_batches(
                validation_data, self.model, self.eval_attack.value_range,
                "validation_data[0]", "validation_data[1]", loss=self.loss)
        if self.awp is not None:
            # First in the list, so that a gamma a user's callback sets at the
            # start of an epoch is the one in force, not overwritten.
            callbacks.insert(0, AWPGammaFromConfig())
        callbacks.append(StopOnNonFiniteLoss())
        outer = None
        if self._fit_depth:
            # A fit inside another fit's callback (a fork at the end of an
            # epoch): the outer fit's observers must not see these steps, and
            # its train function (traced with their hand-off), observers and
            # data stream must be in place again when this one returns.
            outer = (self._iterate_observers.saved(), self.train_function,
                     self._kept_train_functions, self._training_stream)
            self._iterate_observers.clear()
            self.train_function = None
            self._kept_train_functions = {}
        self._fit_depth += 1
        self._training_stream = stream
        try:
            return self._raising_input_errors(
                super().fit, x, y, batch_size=batch_size, epochs=epochs,
                callbacks=callbacks, shuffle=shuffle, validation_split=validation_split,
                validation_data=validation_data, sample_weight=sample_weight,
                validation_batch_size=validation_batch_size, **kwargs,
            )
        finally:
            self._fit_depth -= 1
            self._training_stream = None
            self._end_iterate_observation()
            if outer is not None:
                (observers, self.train_function, self._kept_train_functions,
                 self._training_stream) = outer
                self._iterate_observers.restore(observers)

    def _end_iterate_observation(self):
        """Remove this fit's iterate observers, and swap the train function
        with the hand-off for the one without: later fits do not pay for the
        host call, and neither function is traced again (dropped, each
        rebuilt one traced anew, 1 s and 3 MB a fit with a tracker on
        TensorFlow that TensorFlow never returns; 5 s on JAX)."""
        self._iterate_observers.clear()
        if (self.train_function is not None
                and self.train_function is self._kept_train_functions.get(True)):
            self._use_train_function(handoff=False)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        """As `keras.Model.evaluate`, with NumPy inputs checked first and
        the batches of a `tf.data.Dataset`, a `keras.utils.PyDataset` or a
        generator as they are read. Also from a callback that holds the
        model (on JAX, the running fit's state is attached first, as
        `Callback.model` does), from the thread that runs `fit`."""
        self._attach_jax_state()
        if batch_size is not None:
            validation.check_int_at_least("batch_size", batch_size, 1)
        if kwargs.get("steps") is not None:
            validation.check_int_at_least("steps", kwargs["steps"], 1)
        x, y = _as_numpy(x), _as_numpy(y)
        if kwargs.get("sample_weight") is not None:
            kwargs["sample_weight"] = _as_numpy(kwargs["sample_weight"])
        _check_data_type(x, "x")
        if _is_array(x):
            self._check_arrays(x, y, "x", "y", self.eval_attack,
                               kwargs.get("sample_weight"), "sample_weight")
        elif model_validation.is_tf_dataset(x):
            x = model_validation.checked_dataset(x, self.model, self.eval_attack.value_range,
                                                 loss=self.loss)
        else:
            x = model_validation.checked_batches(x, self.model, self.eval_attack.value_range,
                                                 loss=self.loss)
        return self._raising_input_errors(
            super().evaluate, x, y, batch_size, *args, **kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None,
                       return_dict=False):
        """As `keras.Model.train_on_batch`, with NumPy (or tensor) inputs
        checked as `fit` checks them (value range of the training attack,
        labels, weights): the attack would otherwise project out-of-range
        inputs into its range, and on JAX out-of-range labels train with
        loss 0. A refused batch changes nothing."""
        self._attach_jax_state()
        x, y, sample_weight = (_as_numpy(a) for a in (x, y, sample_weight))
        _check_data_type(x, "x")
        if _is_array(x):
            num_classes = self._check_arrays(
                x, y, "x", "y", self.attack, sample_weight, "sample_weight")
            model_validation.check_class_weight(class_weight, num_classes, sample_weight)
            if class_weight is not None:
                sample_weight = model_validation.class_weights_per_example(
                    class_weight, y, num_classes)
                class_weight = None
        return super().train_on_batch(x, y, sample_weight=sample_weight,
                                      class_weight=class_weight, return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """As `keras.Model.test_on_batch`, with NumPy (or tensor) inputs
        checked as `evaluate` checks them (against the evaluation attack)."""
        self._attach_jax_state()
        x, y, sample_weight = (_as_numpy(a) for a in (x, y, sample_weight))
        _check_data_type(x, "x")
        if _is_array(x):
            self._check_arrays(x, y, "x", "y", self.eval_attack, sample_weight,
                               "sample_weight")
        return super().test_on_batch(x, y, sample_weight=sample_weight,
                                     return_dict=return_dict)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """As `keras.Model.predict`; on JAX, as `evaluate`, also from a
        callback that holds the model, and the model stays usable when the
        data raises."""
        self._attach_jax_state()
        return self._state_kept(super().predict, x, batch_size=batch_size,
                                verbose=verbose, steps=steps, callbacks=callbacks)

    def _raising_input_errors(self, function, *args, **kwargs):
        """`function(...)` (`fit` or `evaluate`), with a failed check of a
        tf.data batch raised as the check's own error, and the state kept
        as `_state_kept` keeps it."""
        return self._state_kept(
            model_validation.dataset_errors_raised, function, *args, **kwargs)

    def _state_kept(self, function, *args, **kwargs):
        """`function(...)`, a `fit`, `evaluate` or `predict` of Keras. On
        JAX, Keras's trainer detaches the variables' values while it loops
        and hands them to each step, which donates their buffers; when an
        exception of any kind ends the loop, the train, test and predict
        functions have attached the newest state whose buffers are intact
        (`backend.steps_function`, `_input_state_kept`: the last completed
        step's, as on TensorFlow), and the state of a loop that ended
        between two steps is attached here (Keras's `evaluate` and
        `predict` have no `finally` that would). No copy is taken. Where
        no intact state was left (an interrupt in the few lines of Keras
        between detaching the variables and the first step of an epoch, or
        while a step of Keras's own functions is dispatched), the variables
        whose values were lost raise an error saying so when read, and the
        exception carries that message as a note."""
        if _backend.name() != "jax":
            return function(*args, **kwargs)
        _keras_compat.forget_reassigned_lost_values()
        try:
            return function(*args, **kwargs)
        except BaseException as error:
            _keras_compat.attach_kept_jax_state(self)
            self._mark_lost_values(error)
            raise

    def _state_variables(self):
        """Every variable of the state Keras's JAX trainer detaches."""
        variables = list(self.variables) + list(self.metrics_variables)
        # An uncompiled model has no `optimizer` attribute: its `predict`
        # must raise the data's error, not an AttributeError from here.
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and optimizer.built:
            variables += list(optimizer.variables)
        return list({id(v): v for v in variables}.values())

    def _mark_lost_values(self, error):
        lost = [v for v in self._state_variables()
                if _keras_compat.holds_no_value(v)
                and _keras_compat.lost_value_message(v) is None]
        if not lost:
            return
        message = (
            f"The values of {len(lost)} variables of this model (e.g. "
            f"{lost[0].path!r}) were lost: Keras's JAX trainer hands them to "
            "each compiled step, which takes (donates) their buffers, and "
            f"keeps the step's result only once the call returns; the "
            f"{type(error).__name__} came in between. Restore a checkpoint "
            "(`robustlab.run_checkpoint.restore_checkpoint` puts back the "
            "optimizer's state too), or load saved weights (`load_weights`) "
            "and compile the model again (a fresh optimizer), or build it again.")
        for variable in lost:
            _keras_compat.mark_value_lost(variable, message)
        if hasattr(error, "add_note"):
            error.add_note(message)
        else:  # Python 3.10: no notes; the interruption itself goes on as it is
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _check_arrays(self, x, y, x_name, y_name, attack, sample_weight=None,
                      weight_name="sample_weight"):
        """NumPy inputs checked against the value range of the attack that
        will run on them (the training attack for `fit`'s data, the
        evaluation attack for validation and `evaluate`), labels against the
        model's classes, and per-example weights. Returns the number of
        classes."""
        x = np.asarray(x)
        # An attack moves inputs by fractions of a unit; integer inputs would
        # truncate it (and on JAX fail inside Keras's random draw).
        validation.check_inputs(x, attack.value_range, name=x_name, floating=True)
        num_classes = model_validation.check_classifier(self.model, x[:1], x_name)
        if y is None:
            raise ValueError(
                f"Argument `{y_name}` must hold the labels of `{x_name}`: "
                f"adversarial training and evaluation attack the loss of each "
                f"example's label. Received: {y_name}=None")
        sparse = validation.check_labels(y, num_classes, len(x), name=y_name)
        losses.check_labels_fit_loss(self.loss, sparse, np.shape(y), y_name)
        if sample_weight is not None:
            _check_sample_weight(sample_weight, len(x), weight_name)
        return num_classes

    # -- saving ----------------------------------------------------------------

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """As `keras.Model.save`, refusing Keras's legacy HDF5 format (a
        path ending in `.h5` or `.hdf5`): it stores neither the attack
        seeds nor, for this model, the optimizer's state, and loads without
        a word about either (save as `.keras`, or `save_weights`)."""
        if str(filepath).endswith((".h5", ".hdf5")):
            raise ValueError(
                "Argument `filepath` must not name a legacy HDF5 file (.h5, "
                ".hdf5): that format cannot store the attack seeds nor the "
                "optimizer state of an AdversarialModel, so a loaded model "
                "would draw other random starts and restart its optimizer. "
                "Save to a `.keras` file (or use `save_weights`). Received: "
                f"filepath={str(filepath)!r}")
        return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None,
               input_signature=None, **kwargs):
        """As `keras.Model.export`; the endpoint serves the classifier's
        outputs (as `predict`). Without `input_signature`, it is the wrapped
        classifier's input with any batch size (Keras would look for the
        shapes of this model's first call, which a wrapper never records)."""
        if input_signature is None:
            input_signature = self._export_input_signature()
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

    def _export_input_signature(self):
        inputs = getattr(self.model, "inputs", None) if self.model.built else None
        if not inputs or len(inputs) != 1:
            raise ValueError(
                "Argument `input_signature` is required to export this model: "
                "its classifier declares no single input (e.g. a subclassed "
                "or unbuilt model); pass e.g. input_signature=[keras.InputSpec("
                "shape=(None, ...), dtype='float32')]. Received: "
                "input_signature=None")
        shape = (None,) + tuple(inputs[0].shape[1:])
        return [keras.InputSpec(shape=shape, dtype=inputs[0].dtype)]

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "attack": self.attack.get_config(),
            "eval_attack": self.eval_attack.get_config(),
            "awp": None if self.awp is None else self.awp.get_config(),
            "seed": self.seed,
            "attack_training_mode": self.attack_training_mode,
            "name": self.name,
            # Keras's own constructor arguments, as `Layer.get_config` saves
            # them: a "mixed_float16" policy makes `compile` wrap the
            # optimizer in a LossScaleOptimizer, whose state a model loaded
            # as float32 (with a plain optimizer) could not take back.
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if not isinstance(config, dict):
            raise TypeError(
                "Argument `config` must be a dict, as `get_config` returns. "
                f"Received: config={config!r}")
        config = dict(config)
        for key in ("model", "attack"):
            if key not in config:
                raise ValueError(
                    f"Argument `config` must hold the key {key!r}, as the "
                    "configs `get_config` returns do. Received: config with "
                    f"keys {sorted(config)}")
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        # Configs without "eval_attack" or "awp" (written by hand) get the
        # constructor's defaults.
        attack = attacks.PGD.from_config(_sub_config(config, "attack"))
        eval_attack = _sub_config(config, "eval_attack", optional=True)
        eval_attack = None if eval_attack is None else attacks.PGD.from_config(eval_attack)
        awp = _sub_config(config, "awp", optional=True)
        awp = None if awp is None else AWP.from_config(awp)
        return cls(model, attack, eval_attack=eval_attack, awp=awp, **config)

    def get_weights(self):
        """As Keras's; also from a callback that holds the model (on JAX,
        the running fit's state is attached first, as `Callback.model`
        does), from the thread that runs `fit`."""
        self._attach_jax_state()
        return super().get_weights()

    def set_weights(self, weights):
        """As Keras's; also from a callback that holds the model: on JAX
        the running fit's state is attached first, so that the next step
        starts from these weights (the end of the epoch would otherwise
        attach the fit's own again). From the thread that runs `fit`."""
        self._attach_jax_state()
        super().set_weights(weights)

    def save_own_variables(self, store):
        # Keras saves this model's own variables before its layers': on JAX,
        # from a callback that holds the model, the state is attached here.
        self._attach_jax_state()
        # The attack seeds are state too: without them a restored model (or a
        # resumed fit) would draw different random starts. So are the seeds
        # of the wrapped model's layers (Dropout's), which Keras does not
        # save: without them a resumed fit would draw other masks.
        super().save_own_variables(store)
        store["train_attack_seed"] = self._train_seed.state
        store["eval_attack_seed"] = self._eval_seed.state
        for i, state in enumerate(self._model_seed_states()):
            store[f"{_MODEL_SEED}{i}"] = state

    def load_own_variables(self, store):
        # Keras loads this model's own variables before its layers': on JAX,
        # mid-epoch, the loaded values must land on attached variables, which
        # the next step reads (the end of the epoch would otherwise attach
        # the fit's own again).
        self._attach_jax_state()
        seeds = {k: store[k] for k in ("train_attack_seed", "eval_attack_seed") if k in store}
        if len(seeds) == 1:
            # One seed without the other is a damaged or edited file: half
            # the attack state would silently keep this model's values.
            raise ValueError(
                "The saved weights must hold both attack seeds "
                "('train_attack_seed' and 'eval_attack_seed') or neither (a "
                "file saved before they were); they hold only one. Received: "
                f"saved attack seeds {sorted(seeds)}")
        model_seeds = {k: store[k] for k in store.keys() if k.startswith(_MODEL_SEED)}
        own = {k: store[k] for k in store.keys() if k not in seeds and k not in model_seeds}
        super().load_own_variables(own)
        if "train_attack_seed" in seeds:
            self._train_seed.state.assign(np.asarray(seeds["train_attack_seed"]))
            self._eval_seed.state.assign(np.asarray(seeds["eval_attack_seed"]))
        # Files saved before these seeds were have none: the layers keep
        # the seeds they have.
        states = self._model_seed_states()
        if model_seeds and len(model_seeds) != len(states):
            raise ValueError(
                f"The saved weights hold the seeds of {len(model_seeds)} random "
                f"layers (Dropout, ...), the model has {len(states)}: they were "
                "saved from another architecture. Received: "
                f"{len(model_seeds)} saved seed states")
        for i, state in enumerate(states if model_seeds else []):
            state.assign(np.asarray(model_seeds[f"{_MODEL_SEED}{i}"]))

    def _model_seed_states(self):
        """The seed states of the wrapped model's layers, in the model's
        order: its variables that are not weights (Keras lists each
        layer's seed generators among its variables, not its weights)."""
        weights = {id(w) for w in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]


def _sub_config(config, key, optional=False):
    """`config.pop(key)`, the config of an attack or of AWP: a dict (or
    None where `optional`)."""
    value = config.pop(key, None)
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise TypeError(
            f"Argument `config` must hold the config of {key!r} as a dict, as "
            "`get_config` returns it. Received: config with "
            f"{key}={value!r}")
    return value


def _is_array(x):
    return isinstance(x, np.ndarray)


def _check_data_type(x, name):
    """A list, tuple or dict would reach Keras as the inputs of a model with
    several, and pass the checks of `fit` and `evaluate` unseen; the
    classifier takes one."""
    if isinstance(x, (list, tuple, dict)):
        raise TypeError(
            f"Argument `{name}` must be a NumPy array or a tensor (the "
            "classifier's one input), a tf.data.Dataset, a keras.utils.PyDataset "
            "or a generator of (x, y[, sample_weight]) batches. Received: "
            f"{name} of type {type(x).__name__}")


def _as_numpy(x):
    """A TensorFlow or JAX tensor as a NumPy array, so that it is checked and
    batched (in the seeded order) as NumPy data is; anything else as it is
    (a `tf.data.Dataset`, a generator, a dict of inputs)."""
    if x is None or isinstance(x, np.ndarray):
        return x
    module = type(x).__module__ or ""
    if (module.split(".")[0] in ("tensorflow", "jax", "jaxlib")
            and hasattr(x, "__array__") and hasattr(x, "shape")):
        return np.asarray(x)
    return x


def _check_fit_counts(batch_size, validation_batch_size, epochs, kwargs):
    """The counts of `fit`: Keras takes some of them silently (a batch size
    of 0 as its default 32, a negative step count as none)."""
    for name, value in (("batch_size", batch_size),
                        ("validation_batch_size", validation_batch_size),
                        ("steps_per_epoch", kwargs.get("steps_per_epoch")),
                        ("validation_steps", kwargs.get("validation_steps"))):
        if value is not None:
            validation.check_int_at_least(name, value, 1)
    validation.check_int_at_least("epochs", epochs, 1)
    validation.check_int_at_least("initial_epoch", kwargs.get("initial_epoch", 0), 0)
    validation.check_int_at_least("validation_freq", kwargs.get("validation_freq", 1), 1)


def _check_validation_split(split, x):
    if isinstance(split, bool) or not isinstance(split, numbers.Real) or not (
            math.isfinite(split) and 0.0 <= split < 1.0):
        raise ValueError(
            "Argument `validation_split` must be a fraction in [0, 1). "
            f"Received: validation_split={split!r}")
    if split and not (_is_array(x) or _as_numpy(x) is not x):
        raise ValueError(
            "Argument `validation_split` is only supported for NumPy or tensor "
            "inputs; pass `validation_data` for other data. "
            f"Received: validation_split={split!r} with x of type {type(x).__name__}")
    return float(split)


def _check_sample_weight(sample_weight, num_examples, name):
    weights = np.asarray(sample_weight)
    if weights.shape not in ((num_examples,), (num_examples, 1)):
        raise ValueError(
            f"Argument `{name}` must hold one weight per example, shape "
            f"({num_examples},). Received: {name} with shape {weights.shape}")
    if not np.issubdtype(weights.dtype, np.number) or weights.dtype.kind == "c":
        raise TypeError(f"Argument `{name}` must hold real numbers. "
                        f"Received: {name} of dtype {weights.dtype}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        bad = ~np.isfinite(weights) | (weights < 0)
        raise ValueError(
            f"Argument `{name}` must hold finite weights >= 0 (a negative "
            f"weight would ascend that example's loss). Received: {name} with "
            f"{int(bad.sum())} entries that are not, e.g. {weights.ravel()[bad.ravel()][0]!r}")


def _accuracy(y_true, y_pred):
    """Keras's choice for "accuracy" (`is_binary_or_sparse_categorical` in
    its compile utilities), from the static shapes: labels of lower rank
    than the predictions, or with a last axis of 1, are class indices, else
    one-hot rows. The loss says nothing reliable about it (a custom
    function's name, say)."""
    rank_true, rank_pred = len(y_true.shape), len(y_pred.shape)
    sparse = rank_true < rank_pred or (y_true.shape[-1] == 1 and y_pred.shape[-1] != 1)
    if sparse:
        return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)
    return keras.metrics.categorical_accuracy(y_true, y_pred)


class _Accuracy(keras.metrics.MeanMetricWrapper):
    """`metrics=["accuracy"]`: `SparseCategoricalAccuracy` or
    `CategoricalAccuracy`, whichever fits the labels of each call (the same
    computation and variables as those)."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=_accuracy, name=name, dtype=dtype)
        self._direction = "up"

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _make_metric(metric, prefix):
    if isinstance(metric, str):
        if metric in _ACCURACY_ALIASES:
            return _Accuracy(name=prefix + "accuracy")
        resolved = keras.metrics.get(metric)
        if isinstance(resolved, keras.metrics.Metric):
            config = resolved.get_config()
            config["name"] = prefix + metric
            return type(resolved).from_config(config)
        return keras.metrics.MeanMetricWrapper(resolved, name=prefix + metric)
    if type(metric) is keras.metrics.MeanMetricWrapper:
        # Its config holds the function serialized, and a user's function
        # that is not registered with Keras would not come back from it.
        fn, fn_kwargs = _keras_compat.mean_metric_function(metric)
        return keras.metrics.MeanMetricWrapper(
            fn, name=prefix + metric.name, dtype=metric.dtype, **fn_kwargs)
    if isinstance(metric, keras.metrics.Metric):
        _check_copied_from_config(metric)
        config = metric.get_config()
        config["name"] = prefix + metric.name
        try:
            copied = type(metric).from_config(config)
        except TypeError as error:
            raise TypeError(_not_copyable(metric, f"its from_config failed ({error})")) from None
        changed = _changed_settings(metric, copied)
        if changed:
            raise TypeError(_not_copyable(
                metric, f"the copy from its config differs in {changed}"))
        return copied
    if callable(metric):
        # As Keras: a function (y_true, y_pred) -> values, averaged.
        name = getattr(metric, "__name__", type(metric).__name__)
        return keras.metrics.MeanMetricWrapper(metric, name=prefix + name)
    raise TypeError(
        "Each metric must be a string, a keras.metrics.Metric or a function "
        f"(y_true, y_pred) -> values. Received: metric={metric!r}"
    )


def _check_copied_from_config(metric):
    """A metric class that keeps Keras's base `get_config` (name and dtype
    only) is rebuilt without its other arguments: a `k=3` came back as the
    default, and every `robust_` and `clean_` value was another metric's."""
    cls = type(metric)
    if cls.get_config is not keras.metrics.Metric.get_config:
        return
    arguments = [
        name for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "name", "dtype")
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)]
    if arguments:
        raise TypeError(_not_copyable(
            metric, f"its get_config (Keras's base one) returns only its name and dtype, "
                    f"not its arguments {arguments}"))


def _is_setting(value):
    """A plain value (a number, string, flag or None, or a tuple, list or
    dict of them): what a metric keeps of its arguments."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_setting(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_setting(v) for k, v in value.items())
    return False


def _changed_settings(original, copied):
    """The attributes holding plain settings that differ between a metric
    and its copy, its name apart."""
    missing = object()
    return sorted(
        key for key, value in vars(original).items()
        if key != "name" and _is_setting(value)
        and not _same_setting(getattr(copied, key, missing), value))


def _same_setting(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True  # a NaN setting is kept, though NaN != NaN
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        # A config may hold a tuple argument as a list.
        return len(a) == len(b) and all(map(_same_setting, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_setting(a[k], b[k]) for k in a)
    return a == b


def _not_copyable(metric, why):
    return (
        f"AdversarialModel.compile computes each metric twice, on the adversarial "
        f"(`robust_`) and the clean (`clean_`) inputs, with two copies made as Keras "
        f"copies a metric, from its config; {type(metric).__name__} cannot be copied "
        f"so: {why}. Define `get_config` to return every argument of its "
        f"`__init__` (see keras.metrics.Metric). Received: metric={metric.name!r}")
