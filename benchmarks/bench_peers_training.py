"""PGD adversarial training with robustlab against the tools users would pick
instead: one training epoch of the `quick` setting, side by side.

The setting is `robustlab.experiments.QUICK` as `experiments.build` makes it:
scikit-learn's digits as `robustlab.data.load` splits them (1,000 training
digits with 20% noisy labels, 797 test digits), the small CNN
(`robustlab.models.small_cnn`, seed 0, weight decay 5e-4 as coupled L2),
batch 64 (16 steps an epoch, the last of 40), SGD learning rate 0.2 with
momentum 0.9, L-inf PGD eps 0.1 with random start and step 2.5 eps / k, on
TensorFlow without XLA (Keras's CPU default). Four ways to train it:

- robustlab: `AdversarialModel(model, PGD(...)).fit` (the quick setting's
  compiled model, metrics included), one `fit(epochs=1)` call an epoch;
  "robustlab in fit": one `fit` call over all the timed epochs, as the main
  job and the lessons train (it runs in a thread that a callback holds at
  the start of each epoch until its turn; each epoch is timed from
  `on_epoch_begin` to `on_epoch_end`); "robustlab spe=16" and "robustlab
  spe=16 in fit": the same compiled with Keras's `steps_per_execution=16`,
  the whole epoch in one compiled call, as `experiments.run` (behind
  `robustlab train`) compiles the quick setting whenever no callback
  watches single batches. All four must end with the same weights bit for
  bit, or the script exits with status 1;
- hand: a hand-written `tf.function` PGD-k SGD step (as in
  `bench_training_step.py`) looped in Python over the epoch's batches;
- torch+torchattacks: the same network built in PyTorch with the Keras
  initial weights copied in, `torchattacks.PGD` and `torch.optim.SGD`
  (same learning rate, momentum and weight decay);
- ART: adversarial-robustness-toolbox's `AdversarialTrainer` with its
  `ProjectedGradientDescent` (batch 64, the whole training batch at once)
  over a `PyTorchClassifier` of that PyTorch network.

Each tool trains its own model; after one warm-up epoch each, every repeat
times one epoch of each tool in turn (the order rotates), and the table holds
the medians of seconds an epoch and the medians of the per-repeat ratios.
Every tool runs on the same number of threads (TensorFlow's intra-op pool
and torch's are both set to the cores this process may use). Also listed:
"robustlab fit-call setup", the one-epoch `fit` call's time beyond an epoch
of the long `fit` (paired by repeat), and "robustlab data pipeline", one
epoch of the shuffled batches `fit` reads, read as `fit` reads them,
without training.

Then every tool trains 5 epochs at PGD-3 from the same initial weights, with
three seeds (each seed sets a tool's random starts and epoch order), and
each final model is copied into the Keras network and attacked with one
common attack, robustlab's PGD-10 (step eps / 4, the quick setting's
evaluation attack, seed 0), on the 797 test digits. Each tool's mean robust
accuracy should lie within the seed-to-seed noise of robustlab's.

Before anything is timed, the Keras and PyTorch networks must give the same
logits on the same inputs within 1e-5 (after the copy into torch and after
the copy back); otherwise the script exits with status 1.

Run: `python benchmarks/bench_peers_training.py` (needs the `bench` extra:
torch, torchattacks, adversarial-robustness-toolbox). `--quick`: 2 repeats
and one seed in the learning check, for a smoke run.
"""

import argparse
import itertools
import os
import statistics
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")  # ART's per-epoch progress bars
# torch's OpenMP threads spin at every barrier; on a shared 2-core machine a
# spinning thread waits on a descheduled one, and a torch epoch took 5-100x
# its time alone (measured). Passive waiting (read when torch loads) gives
# torch its unshared speed; TensorFlow's thread pool is not OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import robustlab  # noqa: E402
import run_all  # noqa: E402
from robustlab import experiments  # noqa: E402
from robustlab.shuffling import epoch_permutation  # noqa: E402
from robustlab.shuffling import epoch_shuffled_batches  # noqa: E402

SETTING = experiments.QUICK
LEARNING_EPOCHS = 5
LEARNING_STEPS = 3
LOGIT_TOLERANCE = 1e-5
STEPS_PER_EPOCH = -(-SETTING.train_size // SETTING.batch_size)
ONE_CALL = f"robustlab spe={STEPS_PER_EPOCH}"  # the whole epoch in one compiled call
# The epochs of one many-epoch `fit` call, timed inside it.
IN_FIT = "robustlab in fit"
ONE_CALL_IN_FIT = f"{ONE_CALL} in fit"
# Rows of the timing table computed from other rows, not run.
DERIVED = ("robustlab fit-call setup",)
THREADS = len(os.sched_getaffinity(0))
TARGETS = {
    "robustlab/hand": "<= 1.05",
    "robustlab in fit/hand": "<= 1.05",
    "robustlab/torch+torchattacks": "<= 1.0",
    "robustlab in fit/torch+torchattacks": "<= 1.0",
    f"{ONE_CALL}/hand": "<= 1.05",
    f"{ONE_CALL} in fit/hand": "<= 1.05",
    f"{ONE_CALL} in fit/torch+torchattacks": "<= 1.0",
    "ART/robustlab": ">= 2",
    "ART/torch+torchattacks": "",
}


# ---------------------------------------------------------------------------
# The small CNN in PyTorch, and weights between Keras and PyTorch.


def torch_small_cnn():
    """`robustlab.models.small_cnn()`'s architecture in PyTorch (NCHW)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 4 * 32, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def _flatten_order_hwc_to_chw(kernel, feature_shape):
    """The first dense kernel after Flatten: Keras flattens (h, w, c), torch
    flattens (c, h, w); reorder its input rows to torch's order."""
    height, width, channels = feature_shape
    units = kernel.shape[-1]
    return (kernel.reshape(height, width, channels, units)
            .transpose(2, 0, 1, 3).reshape(-1, units))


def _flatten_order_chw_to_hwc(kernel, feature_shape):
    height, width, channels = feature_shape
    units = kernel.shape[-1]
    return (kernel.reshape(channels, height, width, units)
            .transpose(1, 2, 0, 3).reshape(-1, units))


def feature_shape_before_flatten(net):
    flatten = next(layer for layer in net.layers
                   if isinstance(layer, keras.layers.Flatten))
    return tuple(flatten.input.shape[1:])


def torch_layout(keras_arrays, feature_shape):
    """Keras `small_cnn` weight arrays (kernel, bias per layer) in torch's
    layout and order: conv kernels HWIO -> OIHW, dense kernels (in, out) ->
    (out, in), the first dense kernel's rows reordered for torch's
    channels-first Flatten."""
    arrays, first_dense = [], True
    for kernel, bias in zip(keras_arrays[::2], keras_arrays[1::2]):
        kernel = np.asarray(kernel)
        if kernel.ndim == 4:
            kernel = kernel.transpose(3, 2, 0, 1)
        else:
            if first_dense:
                kernel = _flatten_order_hwc_to_chw(kernel, feature_shape)
                first_dense = False
            kernel = kernel.T
        arrays += [np.ascontiguousarray(kernel), np.asarray(bias)]
    return arrays


def keras_layout(torch_arrays, feature_shape):
    """The inverse of `torch_layout`."""
    arrays, first_dense = [], True
    for kernel, bias in zip(torch_arrays[::2], torch_arrays[1::2]):
        if kernel.ndim == 4:
            kernel = kernel.transpose(2, 3, 1, 0)
        else:
            kernel = kernel.T
            if first_dense:
                kernel = _flatten_order_chw_to_hwc(kernel, feature_shape)
                first_dense = False
        arrays += [np.ascontiguousarray(kernel), bias]
    return arrays


def copy_keras_to_torch(net, module):
    """Keras `small_cnn` weights into `torch_small_cnn()`."""
    import torch

    arrays = torch_layout(net.get_weights(), feature_shape_before_flatten(net))
    with torch.no_grad():
        for parameter, array in zip(module.parameters(), arrays):
            parameter.copy_(torch.from_numpy(array))
    return module


def copy_torch_to_keras(module, net):
    """The inverse of `copy_keras_to_torch`."""
    arrays = [p.detach().cpu().numpy() for p in module.parameters()]
    net.set_weights(keras_layout(arrays, feature_shape_before_flatten(net)))
    return net


def channels_first(x):
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def max_logit_difference(net, module, x):
    """Largest |Keras logit - torch logit| on the inputs `x` (NHWC)."""
    import torch

    keras_logits = keras.ops.convert_to_numpy(net(x, training=False))
    module.eval()
    with torch.no_grad():
        torch_logits = module(torch.from_numpy(channels_first(x))).numpy()
    return float(np.max(np.abs(keras_logits - torch_logits)))


def report_transfer(difference, what):
    """Print the check; exit with status 1 if the logits differ by more than
    `LOGIT_TOLERANCE`."""
    verdict = "ok" if difference <= LOGIT_TOLERANCE else "FAILED"
    print(f"weights transfer ({what}): max |logit difference| = {difference:.2e} "
          f"(tolerance {LOGIT_TOLERANCE:g}) {verdict}", flush=True)
    if difference > LOGIT_TOLERANCE:
        sys.exit(1)


def check_same_logits(net, module, x, what):
    report_transfer(max_logit_difference(net, module, x), f"{what}, {len(x)} inputs")


def same_thread_budget(threads):
    """TensorFlow's and torch's compute pools on `threads` threads (must run
    before TensorFlow executes its first op)."""
    import torch

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    torch.set_num_threads(threads)


def versions():
    import art
    import tensorflow as tf
    import torch
    import torchattacks

    return (f"keras {keras.__version__}, tensorflow {tf.__version__}, torch "
            f"{torch.__version__}, torchattacks {torchattacks.__version__}, ART "
            f"{art.__version__}")


# ---------------------------------------------------------------------------
# One epoch of each tool: `run_epoch()` callables over their own models.


def pgd_config(steps):
    return SETTING.replace(train_steps=steps).train_attack


def robustlab_model(steps, attack_seed=None, steps_per_execution=1):
    """The quick setting's compiled `AdversarialModel` at PGD-`steps`
    (`experiments.build`); `attack_seed` changes only the attack's random
    starts and the epoch order, not the initial weights."""
    dataset, model = experiments.build(SETTING.replace(train_steps=steps),
                                       steps_per_execution=steps_per_execution)
    if attack_seed is not None:
        initial = model.model.get_weights()
        _, model = experiments.build(
            SETTING.replace(train_steps=steps, seed=attack_seed),
            steps_per_execution=steps_per_execution)
        model.model.set_weights(initial)
    return dataset, model


def robustlab_epochs(model, dataset):
    """`run_epoch()`, one `fit` call an epoch: what a user pays who calls
    `fit(epochs=1)` in a loop (the call's setup included)."""
    epochs = itertools.count()

    def run_epoch():
        # initial_epoch moves on, so each epoch gets its own seeded order.
        epoch = next(epochs)
        model.fit(dataset.x_train, dataset.y_train, batch_size=SETTING.batch_size,
                  epochs=epoch + 1, initial_epoch=epoch, verbose=0)

    return run_epoch


class _PacedEpochs(keras.callbacks.Callback):
    """Holds a `fit` running in another thread at the start of each epoch
    until `run_epoch` lets it go, and times each epoch from `on_epoch_begin`
    to `on_epoch_end`."""

    def __init__(self):
        super().__init__()
        self.go = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)
        self.seconds = []
        self._first = True

    def on_epoch_begin(self, epoch, logs=None):
        if not self._first:
            # Released here, not in on_epoch_end, so that the epoch's other
            # end-of-epoch callbacks have run before the next tool starts.
            self.finished.release()
        self._first = False
        self.go.acquire()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def on_train_end(self, logs=None):
        self.finished.release()


def robustlab_long_fit_epochs(model, dataset, epochs):
    """`run_epoch()` that lets one `fit(epochs=epochs)` call, running in a
    thread, train its next epoch: what each epoch of a many-epoch `fit`
    costs (the main job's, the lessons'). `run_epoch.seconds` lists each
    epoch's seconds inside `fit`; call it exactly `epochs` times."""
    pacer = _PacedEpochs()
    errors = []

    def train():
        try:
            model.fit(dataset.x_train, dataset.y_train, batch_size=SETTING.batch_size,
                      epochs=epochs, verbose=0, callbacks=[pacer])
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)
            pacer.finished.release()

    thread = threading.Thread(target=train, daemon=True)

    def run_epoch():
        if thread.ident is None:
            thread.start()
        pacer.go.release()
        pacer.finished.acquire()
        if errors:
            raise errors[0]

    run_epoch.seconds = pacer.seconds
    return run_epoch


def robustlab_pipeline_epochs(dataset):
    """`run_epoch()` that only reads one epoch of the seeded, shuffled
    batches robustlab's `fit` trains on, as `fit` reads them: the data part
    of its epoch."""
    data, set_epoch, steps = epoch_shuffled_batches(
        dataset.x_train, dataset.y_train, None, SETTING.batch_size, SETTING.seed)
    epochs = itertools.count()
    stream = []

    def run_epoch():
        set_epoch.on_epoch_begin(next(epochs))
        if steps is None:  # the data ends with each epoch
            for _ in data:
                pass
            return
        # An endless stream of epochs: one iterator serves the whole `fit`.
        if not stream:
            stream.append(iter(data))
        for _ in range(steps):
            next(stream[0])

    return run_epoch


def keras_net():
    return robustlab.models.small_cnn(seed=SETTING.seed,
                                      weight_decay=SETTING.weight_decay)


def hand_written_epochs(net, attack, dataset, seed):
    """The `tf.function` PGD-k step of `bench_training_step.hand_written_step`
    (that one is closed over one fixed batch and learning rate 0.01), here
    with the quick setting's optimizer and a batch signature that takes the
    epoch's last, smaller batch without retracing."""
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(SETTING.learning_rate, momentum=SETTING.momentum)
    optimizer.build(net.trainable_variables)
    eps, alpha, steps = attack.eps, attack.step_size, attack.steps
    x, y = dataset.x_train, dataset.y_train
    signature = (tf.TensorSpec((None,) + x.shape[1:], tf.float32),
                 tf.TensorSpec((None,), tf.as_dtype(y.dtype)))

    random_starts = tf.random.Generator.from_seed(seed)

    @tf.function(input_signature=signature, jit_compile=False)
    def step(xb, yb):
        start = random_starts.uniform(tf.shape(xb), -eps, eps)
        x_adv = tf.clip_by_value(xb + start, 0, 1)
        for _ in range(steps):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x_adv)
                loss = loss_fn(yb, net(x_adv, training=False))
            g = tape.gradient(loss, x_adv)
            x_adv = tf.clip_by_value(
                tf.clip_by_value(x_adv + alpha * tf.sign(g), xb - eps, xb + eps), 0, 1)
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, net(x_adv, training=True)) + tf.add_n(net.losses or [0.0])
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    order = epoch_permutation(len(x), seed)
    epochs = itertools.count()

    def run_epoch():
        indices = order(next(epochs))
        for start in range(0, len(x), SETTING.batch_size):
            batch = indices[start:start + SETTING.batch_size]
            loss = step(x[batch], y[batch])
        return float(loss)

    return run_epoch


def torch_model_from(net):
    return copy_keras_to_torch(net, torch_small_cnn())


def torch_sgd(module):
    import torch

    # torch's coupled weight_decay adds wd * w to every gradient, as Keras's
    # L2(wd / 2) on every kernel and bias of robustlab's model does.
    return torch.optim.SGD(module.parameters(), lr=SETTING.learning_rate,
                           momentum=SETTING.momentum,
                           weight_decay=SETTING.weight_decay)


def torchattacks_epochs(module, attack, dataset, seed):
    import torch
    import torchattacks

    pgd = torchattacks.PGD(module, eps=attack.eps, alpha=attack.step_size,
                           steps=attack.steps, random_start=True)
    optimizer = torch_sgd(module)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.from_numpy(channels_first(dataset.x_train))
    y = torch.from_numpy(dataset.y_train.astype(np.int64))
    order = epoch_permutation(len(x), seed)
    epochs = itertools.count()

    def run_epoch():
        module.train()
        indices = torch.from_numpy(order(next(epochs)))
        for start in range(0, len(x), SETTING.batch_size):
            batch = indices[start:start + SETTING.batch_size]
            xb, yb = x[batch], y[batch]
            x_adv = pgd(xb, yb)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(x_adv), yb)
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    return run_epoch


def art_epochs(module, attack, dataset):
    # ART draws its epoch order and random starts from NumPy's global state.
    import torch
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import AdversarialTrainer
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(
        module, loss=torch.nn.CrossEntropyLoss(), optimizer=torch_sgd(module),
        input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0),
        device_type="cpu")
    # AdversarialTrainerMadryPGD would attack in ART's default batches of 32;
    # batch_size=64 crafts each training batch in one go, as the others do.
    pgd = ProjectedGradientDescent(
        classifier, norm=np.inf, eps=attack.eps, eps_step=attack.step_size,
        max_iter=attack.steps, num_random_init=1, batch_size=SETTING.batch_size,
        verbose=False)
    trainer = AdversarialTrainer(classifier, pgd, ratio=1.0)
    x = channels_first(dataset.x_train)
    y = dataset.y_train.astype(np.int64)

    def run_epoch():
        trainer.fit(x, y, batch_size=SETTING.batch_size, nb_epochs=1)

    return run_epoch


def epoch_runners(steps, epochs, seed=0):
    """{tool: run_epoch} for PGD-`steps`, each on a fresh model with the
    same initial weights, `seed` setting each tool's random starts and epoch
    order; also the models being trained, to read back. The runners of one
    long `fit` (`IN_FIT`, `ONE_CALL_IN_FIT`) must be called `epochs`
    times."""
    dataset, model = robustlab_model(steps, attack_seed=seed or None)
    _, one_call = robustlab_model(steps, attack_seed=seed or None,
                                  steps_per_execution=STEPS_PER_EPOCH)
    _, long_fit = robustlab_model(steps, attack_seed=seed or None)
    _, one_call_long_fit = robustlab_model(steps, attack_seed=seed or None,
                                           steps_per_execution=STEPS_PER_EPOCH)
    attack = pgd_config(steps)
    net = keras_net()
    torch_module = torch_model_from(keras_net())
    art_module = torch_model_from(keras_net())
    runners = {
        "robustlab": robustlab_epochs(model, dataset),
        ONE_CALL: robustlab_epochs(one_call, dataset),
        IN_FIT: robustlab_long_fit_epochs(long_fit, dataset, epochs),
        ONE_CALL_IN_FIT: robustlab_long_fit_epochs(one_call_long_fit, dataset, epochs),
        "hand": hand_written_epochs(net, attack, dataset, seed),
        "torch+torchattacks": torchattacks_epochs(torch_module, attack, dataset, seed),
        "ART": art_epochs(art_module, attack, dataset),
    }
    trained = {"robustlab": model.model, ONE_CALL: one_call.model,
               IN_FIT: long_fit.model, ONE_CALL_IN_FIT: one_call_long_fit.model,
               "hand": net, "torch+torchattacks": torch_module, "ART": art_module}
    return dataset, runners, trained


# ---------------------------------------------------------------------------
# Timing


def interleaved_seconds(runners, repeats, warmup=1):
    """{tool: [seconds of each repeat]}: every repeat runs each tool once, the
    order rotating by one tool a repeat, so that load from other processes
    falls on all tools alike. The epochs of one long `fit` are timed inside
    it (`run_epoch.seconds`); "robustlab fit-call setup" is what a one-epoch
    `fit` call costs beyond such an epoch (the same training: the weights
    are checked equal)."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    times = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    for name in names:
        if hasattr(runners[name], "seconds"):
            times[name] = runners[name].seconds[warmup:]
    times["robustlab fit-call setup"] = [
        call - inside for call, inside in zip(times["robustlab"], times[IN_FIT])]
    return times


def check_same_weights(trained, steps):
    """Exit with status 1 unless robustlab's four ways of calling `fit`
    trained to the same weights bit for bit (same initial weights, seeds and
    epochs)."""
    others = (ONE_CALL, IN_FIT, ONE_CALL_IN_FIT)
    reference = trained["robustlab"].get_weights()
    same = all(np.array_equal(a, b) for name in others
               for a, b in zip(reference, trained[name].get_weights()))
    print(f"PGD-{steps}: weights after every timed epoch, robustlab, "
          f"{', '.join(others)}: {'identical' if same else 'DIFFERENT'}")
    if not same:
        sys.exit(1)


def paired_ratio(times, numerator, denominator):
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def timing_rows(steps_list, repeats):
    rows = []
    for steps in steps_list:
        dataset, runners, trained = epoch_runners(steps, epochs=1 + repeats)
        runners["robustlab data pipeline"] = robustlab_pipeline_epochs(dataset)
        times = interleaved_seconds(runners, repeats)
        check_same_weights(trained, steps)
        rows.append((steps, times, {
            "robustlab/hand": paired_ratio(times, "robustlab", "hand"),
            f"{IN_FIT}/hand": paired_ratio(times, IN_FIT, "hand"),
            "robustlab/torch+torchattacks": paired_ratio(
                times, "robustlab", "torch+torchattacks"),
            f"{IN_FIT}/torch+torchattacks": paired_ratio(
                times, IN_FIT, "torch+torchattacks"),
            f"{ONE_CALL}/hand": paired_ratio(times, ONE_CALL, "hand"),
            f"{ONE_CALL_IN_FIT}/hand": paired_ratio(times, ONE_CALL_IN_FIT, "hand"),
            f"{ONE_CALL_IN_FIT}/torch+torchattacks": paired_ratio(
                times, ONE_CALL_IN_FIT, "torch+torchattacks"),
            "ART/robustlab": paired_ratio(times, "ART", "robustlab"),
            "ART/torch+torchattacks": paired_ratio(times, "ART", "torch+torchattacks"),
        }))
    return rows


def print_timing(rows, repeats):
    tools = list(rows[0][1])
    ratios = list(rows[0][2])
    medians = [{name: statistics.median(t) for name, t in times.items()}
               for _, times, _ in rows]
    columns = "".join(f"{'PGD-' + str(steps):>9s}" for steps, _, _ in rows)
    print(f"\nseconds per training epoch ({STEPS_PER_EPOCH} steps of batch "
          f"{SETTING.batch_size}), median of "
          f"{repeats} interleaved repeats after 1 warm-up epoch each")
    print(f"{'tool':30s}{columns}")
    for name in tools:
        print(f"{name:30s}" + "".join(f"{m[name]:9.3f}" for m in medians))
    # A process paused or starved by others' load shows as a repeat far off
    # its median; the medians hold while fewer than half the repeats are.
    timed = [name for name in tools if name not in DERIVED]
    slow = sum(t > 2 * m[name] for (_, times, _), m in zip(rows, medians)
               for name in timed for t in times[name])
    print(f"repeats over twice their median (stalls from other load): {slow} of "
          f"{sum(len(times[name]) for _, times, _ in rows for name in timed)}")
    print(f"\n{'ratio (median of per-repeat ratios)':30s}{columns}   target")
    for name in ratios:
        print(f"{name:30s}" + "".join(f"{ratio[name]:9.2f}" for _, _, ratio in rows)
              + f"   {TARGETS[name]}")


# ---------------------------------------------------------------------------
# Do they all learn? One common attack on every final model.


def robust_and_clean_accuracy(net, x, y):
    """Accuracy under robustlab's PGD-10 (the quick evaluation attack, seed
    0) and on the clean inputs."""
    x_adv = robustlab.attacks.run_attack(net, x, y, SETTING.eval_attack,
                                         batch_size=SETTING.eval_batch_size, seed=0)

    def accuracy(inputs):
        logits = keras.ops.convert_to_numpy(net(inputs, training=False))
        return float(np.mean(np.argmax(logits, axis=1) == y))

    return accuracy(x_adv), accuracy(x)


def as_keras(model, probe):
    """A Keras network holding `model`'s weights (a torch model is copied
    back) and the largest logit difference of the copy on `probe`."""
    if isinstance(model, keras.Model):
        return model, 0.0
    net = copy_torch_to_keras(model, keras_net())
    return net, max_logit_difference(net, model, probe)


def learning_rows(seeds):
    """(tool, seed, robust accuracy, clean accuracy) after `LEARNING_EPOCHS`
    epochs of PGD-`LEARNING_STEPS` from the shared initial weights; checks
    the copies of the trained torch models back into Keras."""
    import torch

    rows, worst_copy = [], 0.0
    for seed in seeds:
        dataset, runners, trained = epoch_runners(LEARNING_STEPS, LEARNING_EPOCHS, seed)
        for name, run_epoch in runners.items():
            if name in (ONE_CALL, IN_FIT, ONE_CALL_IN_FIT):
                continue  # trains to robustlab's weights (checked above)
            np.random.seed(seed)  # ART's shuffling and random starts
            torch.manual_seed(seed)  # torchattacks' random starts
            for _ in range(LEARNING_EPOCHS):
                run_epoch()
            net, difference = as_keras(trained[name], dataset.x_test)
            worst_copy = max(worst_copy, difference)
            rows.append((name, seed, *robust_and_clean_accuracy(
                net, dataset.x_test, dataset.y_test)))
    report_transfer(worst_copy, "trained torch models back into Keras, test digits")
    return rows, len(dataset.y_test)


def _mean_and_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def print_learning(rows, n_test):
    seeds = sorted({seed for _, seed, _, _ in rows})
    tools = list(dict.fromkeys(name for name, *_ in rows))
    robust = {(name, seed): r for name, seed, r, _ in rows}
    clean = {(name, seed): c for name, seed, _, c in rows}
    print(f"\nafter {LEARNING_EPOCHS} epochs of PGD-{LEARNING_STEPS} training from the "
          f"same initial weights (seeds: random starts and epoch order): accuracy on "
          f"the {n_test} test digits; robust: under robustlab's PGD-10 (eps "
          f"{SETTING.eval_attack.eps:g}, step {SETTING.eval_attack.step_size:g}, "
          "seed 0) for every model")
    print(f"{'trained by':20s}" + "".join(f"{'seed ' + str(s):>9s}" for s in seeds)
          + f"{'mean':>9s}{'sd':>7s}{'clean mean':>12s}")
    summary = {}
    for name in tools:
        values = [robust[name, s] for s in seeds]
        mean, sd = _mean_and_sd(values)
        summary[name] = mean
        print(f"{name:20s}" + "".join(f"{v:9.3f}" for v in values) + f"{mean:9.3f}"
              f"{sd:7.3f}{statistics.mean(clean[name, s] for s in seeds):12.3f}")
    if len(seeds) < 2:
        print("one seed: no estimate of the noise (run without --quick)")
        return
    # The seed-to-seed spread within a tool, pooled over the tools, is the
    # noise a difference of two tools' means must clear.
    pooled = statistics.mean(_mean_and_sd([robust[n, s] for s in seeds])[1] ** 2
                             for n in tools) ** 0.5
    margin = 2 * pooled * (2 / len(seeds)) ** 0.5
    apart = [n for n in tools if abs(summary[n] - summary["robustlab"]) > margin]
    print(f"pooled seed sd {pooled:.3f}; means within 2 standard errors of a "
          f"difference ({margin:.3f}) of robustlab's: "
          + ("yes" if not apart else "NO: " + ", ".join(apart)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 repeats, one seed in the learning check")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        sys.exit("bench_peers_training.py compares TensorFlow training: run it "
                 "with KERAS_BACKEND=tensorflow")
    run_all.require_peer_modules("bench_peers_training.py")
    repeats = args.repeats or (2 if args.quick else 9)
    same_thread_budget(THREADS)
    import tensorflow as tf
    import torch

    print(versions())
    print(f"threads: TensorFlow intra-op "
          f"{tf.config.threading.get_intra_op_parallelism_threads()}, inter-op "
          f"{tf.config.threading.get_inter_op_parallelism_threads()}; torch "
          f"{torch.get_num_threads()} (cores available: {THREADS}); CPU; "
          "jit_compile=False")
    dataset, model = robustlab_model(LEARNING_STEPS)
    print(f"setting: {SETTING.name} v{SETTING.version}: {len(dataset.x_train)} training "
          f"digits ({SETTING.label_noise:.0%} noisy labels), batch {SETTING.batch_size}, "
          f"SGD lr {SETTING.learning_rate:g} momentum {SETTING.momentum:g}, weight "
          f"decay {SETTING.weight_decay:g}, PGD eps {SETTING.eps:g} step 2.5 eps / k; "
          f"robustlab jit_compile={model.jit_compile}")
    check_same_logits(model.model, torch_model_from(model.model), dataset.x_test,
                      "Keras initial weights into torch")
    print_timing(timing_rows((3, 10), repeats), repeats)
    print_learning(*learning_rows(seeds=(0,) if args.quick else (0, 1, 2)))


if __name__ == "__main__":
    main()
