"""PGD-10 adversarial training of PreAct ResNet-18 on a GPU: robustlab's
`fit` on Keras-JAX against a hand-written `jax.jit` step and PyTorch.

One run measures, side by side, at each batch size (default 128 and 512),
CIFAR-10 shapes (32x32x3, 10 classes) and the `cifar10_rice` experiment's
attack and optimiser (eps 8/255, step 2/255, 10 steps, SGD momentum 0.9,
weight decay 5e-4, learning rate 0.1):

- `robustlab fit`: `robustlab.AdversarialModel(net, PGD).fit` on the Keras
  JAX backend, `mixed_bfloat16`, `jit_compile=True`. Data: a NumPy array in
  host memory, batched by Keras, which on a GPU copies each batch to the
  device one step ahead (what a user's in-memory dataset costs; no input
  pipeline).
- `jax hand`: `jax.jit` over `net.stateless_call` of the same Keras model
  (same policy), PGD-10 by `jax.grad` w.r.t. the input, SGD momentum with
  weight decay written out; the k attack steps unrolled into the program
  (robustlab's attack is a `fori_loop` on a GPU). Data: already on the
  device. Also timed with a
  host sync after every step (`jax hand sync`), which is what `fit` pays
  when a callback reads the loss at every batch, and with the attack in a
  `jax.lax.fori_loop` instead (`jax hand fori_loop`; on an H200, 2% slower
  than unrolled at batch 512, 19% at batch 128).
- `torch eager` / `torch compile`: the same network written in PyTorch
  (same layer layout: the script checks that both count the same
  parameters and multiply-adds), bf16 autocast, `channels_last`, cuDNN
  benchmark mode, `torch.compile(dynamic=False)` for the compiled rows.
  Data: already on the device.

Reported: images per second (median over repeats of `--steps` steps after a
warm-up of as many steps, whose extra time over a timed repeat is reported
as the compile time), and the fraction of the GPU's dense bf16 peak that
the arithmetic actually done reaches. FLOP accounting: PGD-k training costs
about (2k + 3) forward passes per image: each attack step is a forward and
an input-gradient backward (about 2 forwards: the weight gradients are not
computed), the training step a forward and a full backward (about 3). The
forward FLOPs are counted from the layer shapes (2 x multiply-adds of the
convolutions and the dense layer; BatchNorm, ReLU and additions are left
out). The peak comes from the device name, or `--peak-tflops`.

The JAX and the PyTorch parts run in separate processes (one after the
other, so neither holds GPU memory or CUDA libraries the other needs); their
rows are written as they are measured, so a run cut short by `--deadline-s`
still prints what it measured.

Run (GPU machine, JAX with CUDA, PyTorch, no TensorFlow needed):
`KERAS_BACKEND=jax python benchmarks/bench_gpu_training.py`; on a GPU
machine without Keras or a network, use `benchmarks/run_gpu.sh`. `--smoke`
runs a tiny network for a few steps (width 4, batch 8, PGD-2; a CPU is fine,
one to three minutes) through every code path, torch included, and prints
the same table: it checks the script, not speed, and fails if a part fails
or TensorFlow was imported.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_IMAGES_PER_S = 13_500
TARGET_BATCH = 512
# Dense bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s. Order
# matters: the first name found in the device name wins.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0),
                    ("A100", 312.0))
TARGET_GPUS = ("H100", "H200")
EARLIER_RESULTS = ("a hand-written jitted Keras-JAX step reached 11.5k images/s, "
                   "compiled PyTorch 6.1k")

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10

FIT = "robustlab fit"
HAND = "jax hand"
HAND_SYNCED = "jax hand sync"
POLICY = "mixed_bfloat16"
HAND_LOOPED = "jax hand fori_loop"
TORCH_EAGER = "torch eager"
TORCH_COMPILE = "torch compile"
ROW_ORDER = (FIT, HAND, HAND_SYNCED, HAND_LOOPED, TORCH_COMPILE, TORCH_EAGER)


# ---------------------------------------------------------------------------
# Settings.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes (default 128 512; smoke 8)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timed repeat (default 10; smoke 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats, median reported (default 5; smoke 2)")
    parser.add_argument("--width", type=int, default=None,
                        help="ResNet width (default 64; smoke 4)")
    parser.add_argument("--pgd-steps", type=int, default=None,
                        help="attack steps k (default 10, cifar10_rice's; smoke 2)")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny and short, to check the script on a CPU")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak when the device name is not known")
    parser.add_argument("--deadline-s", type=float, default=480.0,
                        help="whole-run wall-clock budget; parts still running "
                             "then are stopped and the rows measured so far printed")
    parser.add_argument("--out", default=None,
                        help="folder for gpu_training.txt and gpu_training.json")
    parser.add_argument("--part", choices=("jax", "torch"), default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_settings(args):
    """The measured configuration: the `cifar10_rice` attack and optimiser
    (copied here so that the torch part needs no Keras; the JAX part checks
    them against robustlab's experiment), sizes from the flags."""
    smoke = args.smoke
    return {
        # Largest batch first: the target's rows are measured first when the
        # deadline cuts the run short. One smoke batch: compiling dominates
        # a CPU smoke run, and a second batch size adds no code path.
        "batches": sorted(args.batches or ((8,) if smoke else (128, 512)),
                          reverse=True),
        "steps": args.steps or (2 if smoke else 10),
        "repeats": args.repeats or (2 if smoke else 5),
        "width": args.width or (4 if smoke else 64),
        "pgd_steps": args.pgd_steps or (2 if smoke else 10),
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "learning_rate": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "smoke": smoke,
    }


# ---------------------------------------------------------------------------
# FLOP accounting.


def conv_multiply_adds(out_height, out_width, kernel_h, kernel_w, in_channels,
                       out_channels):
    return out_height * out_width * kernel_h * kernel_w * in_channels * out_channels


def forward_flops(multiply_adds):
    return 2 * multiply_adds


def training_flops_per_image(forward_flops_per_image, pgd_steps):
    """(2k + 3) forwards: k attack steps of forward + input-gradient backward,
    one training forward + backward (input and weight gradients)."""
    return (2 * pgd_steps + 3) * forward_flops_per_image


def peak_tflops_for(device_name, override=None):
    if override:
        return override, "--peak-tflops"
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in (device_name or "").lower():
            return peak, f"datasheet ({key})"
    return None, "unknown device: pass --peak-tflops"


def is_target_gpu(device_name):
    return any(name.lower() in (device_name or "").lower() for name in TARGET_GPUS)


# ---------------------------------------------------------------------------
# Timing.


def median_repeat_and_compile(warmup_s, repeat_s):
    """Median timed repeat, and what the warm-up (same number of steps) took
    beyond it: the compilation and autotuning time."""
    median = statistics.median(repeat_s)
    return median, max(warmup_s - median, 0.0)


def throughput_row(implementation, batch, cfg, warmup_s, repeat_s, data, note=""):
    median, compile_s = median_repeat_and_compile(warmup_s, repeat_s)
    return {
        "implementation": implementation,
        "batch": batch,
        "images_per_s": batch * cfg["steps"] / median,
        "step_ms": 1000 * median / cfg["steps"],
        "compile_s": compile_s,
        "repeats_s": repeat_s,
        "data": data,
        "note": note,
    }


def write_row(rows_file, record):
    # One JSON line per record, flushed at once: a part stopped at the
    # deadline still leaves every row it finished.
    with open(rows_file, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def synthetic_images(count, seed=0):
    """Uniform images in [0, 1] and random labels, float32 NHWC."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (count,) + IMAGE_SHAPE).astype("float32")
    y = rng.integers(0, NUM_CLASSES, count).astype("int32")
    return x, y


# ---------------------------------------------------------------------------
# The JAX part: robustlab's fit and the hand-written step.


def settings_differing_from(cfg, experiment):
    """{setting: (ours, the experiment's)} where the run departs from it."""
    expected = {
        "eps": experiment.eps, "step_size": experiment.train_step_size,
        "pgd_steps": experiment.train_steps,
        "learning_rate": experiment.learning_rate,
        "momentum": experiment.momentum, "weight_decay": experiment.weight_decay,
    }
    return {k: (cfg[k], v) for k, v in expected.items() if abs(cfg[k] - v) > 1e-12}


def keras_forward_multiply_adds(model):
    """Multiply-adds of one image's forward pass, from the layer shapes."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w, in_channels, out_channels = layer.kernel.shape
            _, out_h, out_w, _ = layer.output.shape
            total += conv_multiply_adds(out_h, out_w, kernel_h, kernel_w,
                                        in_channels, out_channels)
        elif isinstance(layer, keras.layers.Dense):
            in_units, out_units = layer.kernel.shape
            total += in_units * out_units
    return int(total)


def build_keras_net(robustlab, cfg):
    import keras

    # keras.backend.clear_session() resets the global dtype policy to
    # float32 (the first GPU run measured every model after the first in
    # float32 that way), so it is set for every network and checked.
    keras.mixed_precision.set_global_policy(POLICY)
    net = robustlab.models.preact_resnet18(
        IMAGE_SHAPE, NUM_CLASSES, width=cfg["width"], seed=0,
        weight_decay=cfg["weight_decay"])
    if net.dtype_policy.name != POLICY:
        raise RuntimeError(f"the network was built with policy {net.dtype_policy.name}, "
                           f"not {POLICY}")
    return net


def pgd_attack(robustlab, cfg):
    return robustlab.PGD(eps=cfg["eps"], step_size=cfg["step_size"],
                         steps=cfg["pgd_steps"])


def epoch_clock():
    """A Keras callback whose `seconds` lists each fit epoch's wall time,
    taken once the device has finished the epoch (JAX runs asynchronously)."""
    import jax
    import keras

    class EpochClock(keras.callbacks.Callback):
        # Epoch hooks only: a batch hook would make Keras run every step's
        # callbacks synchronously and change what is measured.
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            jax.block_until_ready([v.value for v in self.model.trainable_variables])
            self.seconds.append(time.perf_counter() - self._start)

    return EpochClock()


def time_robustlab_fit(robustlab, cfg, batch):
    import keras

    x, y = synthetic_images(batch * cfg["steps"])
    model = robustlab.AdversarialModel(build_keras_net(robustlab, cfg),
                                       attack=pgd_attack(robustlab, cfg))
    model.compile(
        optimizer=keras.optimizers.SGD(cfg["learning_rate"], momentum=cfg["momentum"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"], jit_compile=True)
    clock = epoch_clock()
    # One fit call, one epoch per repeat: the first epoch compiles; the
    # per-call work of fit (array checks, iterator set-up) stays out.
    model.fit(x, y, batch_size=batch, epochs=1 + cfg["repeats"], shuffle=False,
              verbose=0, callbacks=[clock])
    return throughput_row(FIT, batch, cfg, clock.seconds[0], clock.seconds[1:],
                          "host NumPy, batched by Keras")


def make_hand_jax_step(net, cfg, unroll=True):
    """A jitted PGD-k + SGD-momentum step over `net.stateless_call`:
    `step(state, x, y, key) -> (state, loss)`, state donated. The k attack
    steps are a Python loop unrolled into the program, or with
    `unroll=False` a `jax.lax.fori_loop` (what robustlab's attack is on an
    accelerator)."""
    import functools

    import jax
    import jax.numpy as jnp

    eps, alpha, k = cfg["eps"], cfg["step_size"], cfg["pgd_steps"]
    lr, momentum, decay = cfg["learning_rate"], cfg["momentum"], cfg["weight_decay"]

    def per_example_xent(logits, y):
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.take_along_axis(log_p, y[:, None], axis=1)[:, 0]

    def attack_loss(x_adv, trainable, non_trainable, y):
        # BatchNorm in inference mode while attacking, as robustlab's default.
        logits, _ = net.stateless_call(trainable, non_trainable, x_adv, training=False)
        return per_example_xent(logits, y).sum()

    def pgd(trainable, non_trainable, x, y, key):
        start = x + jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)

        def ascend(_, x_adv):
            grad = jax.grad(attack_loss)(x_adv, trainable, non_trainable, y)
            x_adv = jnp.clip(x_adv + alpha * jnp.sign(grad), x - eps, x + eps)
            return jnp.clip(x_adv, 0.0, 1.0)

        x_adv = jnp.clip(start, 0.0, 1.0)
        if unroll:
            for i in range(k):
                x_adv = ascend(i, x_adv)
        else:
            x_adv = jax.lax.fori_loop(0, k, ascend, x_adv)
        return jax.lax.stop_gradient(x_adv)

    def training_loss(trainable, non_trainable, x, y):
        logits, non_trainable = net.stateless_call(trainable, non_trainable, x,
                                                   training=True)
        return per_example_xent(logits, y).mean(), non_trainable

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state, x, y, key):
        trainable, non_trainable, velocity = state
        x_adv = pgd(trainable, non_trainable, x, y, key)
        (loss, non_trainable), grads = jax.value_and_grad(
            training_loss, has_aux=True)(trainable, non_trainable, x_adv, y)
        # PyTorch's SGD: v = m v + (g + wd w), w -= lr v (the same update as
        # Keras SGD with the models' L2(wd / 2) regularisers at a fixed lr).
        velocity = [momentum * v + g + decay * w
                    for v, g, w in zip(velocity, grads, trainable)]
        trainable = [w - lr * v for w, v in zip(trainable, velocity)]
        return (trainable, non_trainable, velocity), loss

    return step


def hand_jax_setup(robustlab, cfg, batch, unroll=True):
    """The hand-written step and what it runs on: `(step, state, xs, ys)`,
    the data on the device as `cfg["steps"]` stacked batches."""
    import jax
    import jax.numpy as jnp

    net = build_keras_net(robustlab, cfg)
    step = make_hand_jax_step(net, cfg, unroll=unroll)
    trainable = [v.value for v in net.trainable_variables]
    state = (trainable, [v.value for v in net.non_trainable_variables],
             [jnp.zeros_like(w) for w in trainable])
    x, y = synthetic_images(batch * cfg["steps"])
    xs = jax.device_put(x.reshape((cfg["steps"], batch) + IMAGE_SHAPE))
    ys = jax.device_put(y.reshape(cfg["steps"], batch))
    return step, state, xs, ys


def hand_epoch_timer(step, state, xs, ys):
    """`epoch(sync_every_step=False) -> seconds`: one timed pass of `step`
    over the stacked batches. The (donated) state and the random key carry
    over from pass to pass."""
    import jax

    carried = {"state": state, "key": jax.random.PRNGKey(0)}

    def epoch(sync_every_step=False):
        key, sub = jax.random.split(carried["key"])
        keys = jax.random.split(sub, len(xs))
        state = carried["state"]
        jax.block_until_ready(state)
        start = time.perf_counter()
        for i in range(len(xs)):
            state, loss = step(state, xs[i], ys[i], keys[i])
            if sync_every_step:
                float(loss)
        jax.block_until_ready(state)
        carried.update(state=state, key=key)
        return time.perf_counter() - start

    return epoch


def time_hand_jax(robustlab, cfg, batch, unroll=True):
    """Rows for the hand-written step: asynchronous, and synced every step
    (for the attack in a `fori_loop`: asynchronous only)."""
    epoch = hand_epoch_timer(*hand_jax_setup(robustlab, cfg, batch, unroll=unroll))
    warmup = epoch(False)
    rows = [throughput_row(HAND if unroll else HAND_LOOPED, batch, cfg, warmup,
                           [epoch(False) for _ in range(cfg["repeats"])],
                           "device", note="" if unroll else "attack in a fori_loop")]
    if not unroll:
        return rows
    rows.append(throughput_row(HAND_SYNCED, batch, cfg, epoch(True),
                               [epoch(True) for _ in range(cfg["repeats"])],
                               "device", note="float(loss) each step"))
    return rows


def release_keras_memory():
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def run_jax_part(cfg, rows_file):
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    import numpy as np

    # The policy must be set before any layer is made.
    keras.mixed_precision.set_global_policy(POLICY)
    import robustlab

    differ = settings_differing_from(cfg, robustlab.experiments.get("cifar10_rice"))
    device = jax.devices()[0]
    net = build_keras_net(robustlab, cfg)
    write_row(rows_file, {
        "meta": "jax",
        "device": f"{device.platform}: {device.device_kind}",
        "versions": f"keras {keras.__version__}, jax {jax.__version__}",
        "policy": keras.mixed_precision.global_policy().name,
        "forward_multiply_adds": keras_forward_multiply_adds(net),
        "trainable_parameters": sum(int(np.prod(v.shape))
                                    for v in net.trainable_variables),
        "settings_differ_from_cifar10_rice": differ,
    })
    del net
    for batch in cfg["batches"]:
        write_row(rows_file, time_robustlab_fit(robustlab, cfg, batch))
        release_keras_memory()
        for row in time_hand_jax(robustlab, cfg, batch):
            write_row(rows_file, row)
        release_keras_memory()
        for row in time_hand_jax(robustlab, cfg, batch, unroll=False):
            write_row(rows_file, row)
        release_keras_memory()
    tensorflow_modules = sorted(m for m in sys.modules
                                if m == "tensorflow" or m.startswith("tensorflow."))
    write_row(rows_file, {"meta": "jax_end",
                          "tensorflow_imported": bool(tensorflow_modules),
                          "tensorflow_modules": tensorflow_modules[:5]})


# ---------------------------------------------------------------------------
# The PyTorch part.


def torch_preact_resnet18(width, num_classes=NUM_CLASSES):
    """PreAct ResNet-18 in PyTorch with robustlab.models.preact_resnet18's
    layout: conv3x3 stem, 4 stages x 2 pre-activation blocks (1x1 projection
    shortcut from the pre-activated input when the shape changes), final
    BN-ReLU, global average pooling, linear logits; no conv biases."""
    from torch import nn

    class PreActBlock(nn.Module):
        def __init__(self, in_channels, channels, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(in_channels)
            self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.shortcut = None
            if stride != 1 or in_channels != channels:
                self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, bias=False)

        def forward(self, x):
            activated = nn.functional.relu(self.bn1(x))
            shortcut = x if self.shortcut is None else self.shortcut(activated)
            out = self.conv1(activated)
            out = self.conv2(nn.functional.relu(self.bn2(out)))
            return out + shortcut

    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False)]
    in_channels = width
    for multiplier, stride in zip((1, 2, 4, 8), (1, 2, 2, 2)):
        for block in (1, 2):
            channels = width * multiplier
            layers.append(PreActBlock(in_channels, channels, stride if block == 1 else 1))
            in_channels = channels
    layers += [nn.BatchNorm2d(in_channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)


def torch_forward_multiply_adds(torch, model):
    """Multiply-adds of one image's forward pass, from the shapes each
    convolution and linear layer produces on a 1-image input."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kernel_h, kernel_w = module.kernel_size
            in_per_group = module.in_channels // module.groups
            total[0] += output[0].numel() * kernel_h * kernel_w * in_per_group
        else:
            total[0] += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros((1, IMAGE_SHAPE[2]) + IMAGE_SHAPE[:2]))
    for hook in hooks:
        hook.remove()
    return int(total[0])


def make_torch_step(torch, model, cfg, device):
    """`step(x, y) -> loss`: PGD-k (BatchNorm in eval mode, weights frozen so
    the attack's backward computes only the input gradient), then one SGD
    step on the adversarial batch; bf16 autocast."""
    functional = torch.nn.functional
    eps, alpha, k = cfg["eps"], cfg["step_size"], cfg["pgd_steps"]
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(
        parameters, lr=cfg["learning_rate"], momentum=cfg["momentum"],
        weight_decay=cfg["weight_decay"],
        **({"fused": True} if device.type == "cuda" else {"foreach": True}))

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def set_weights_trainable(flag):
        for p in parameters:
            p.requires_grad_(flag)

    def pgd(x, y):
        model.eval()
        set_weights_trainable(False)
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0.0, 1.0)
        for _ in range(k):
            x_adv.requires_grad_(True)
            with autocast():
                loss = functional.cross_entropy(model(x_adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(),
                                                x - eps), x + eps).clamp_(0.0, 1.0)
        set_weights_trainable(True)
        model.train()
        return x_adv.detach()

    def step(x, y):
        x_adv = pgd(x, y)
        with autocast():
            loss = functional.cross_entropy(model(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def time_torch(torch, cfg, batch, device, compiled):
    torch.manual_seed(0)
    model = torch_preact_resnet18(cfg["width"]).to(
        device, memory_format=torch.channels_last)
    if compiled:
        torch._dynamo.reset()  # each batch size gets its own static graphs
        model = torch.compile(model, dynamic=False)
    step = make_torch_step(torch, model, cfg, device)
    x, y = synthetic_images(batch * cfg["steps"])
    images = torch.from_numpy(x).permute(0, 3, 1, 2).to(device)
    xs = [batch_x.contiguous(memory_format=torch.channels_last)
          for batch_x in images.reshape((cfg["steps"], batch, 3) + IMAGE_SHAPE[:2])]
    ys = torch.from_numpy(y.astype("int64")).to(device).reshape(cfg["steps"], batch)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def epoch():
        synchronize()
        start = time.perf_counter()
        for i in range(cfg["steps"]):
            step(xs[i], ys[i])
        synchronize()
        return time.perf_counter() - start

    warmup = epoch()
    repeats = [epoch() for _ in range(cfg["repeats"])]
    return throughput_row(TORCH_COMPILE if compiled else TORCH_EAGER, batch, cfg,
                          warmup, repeats, "device")


def run_torch_part(cfg, rows_file):
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    reference = torch_preact_resnet18(cfg["width"])
    write_row(rows_file, {
        "meta": "torch",
        "device": f"{device.type}: {name}",
        "versions": f"torch {torch.__version__}",
        "forward_multiply_adds": torch_forward_multiply_adds(torch, reference),
        "trainable_parameters": sum(p.numel() for p in reference.parameters()),
    })
    for batch in cfg["batches"]:
        for compiled in (True, False):
            write_row(rows_file, time_torch(torch, cfg, batch, device, compiled))
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------
# The run: both parts, then the table.


def run_part(part, argv, rows_file, timeout_s):
    """Run one part in its own process; returns how it ended."""
    command = [sys.executable, os.path.abspath(__file__), *argv,
               "--part", part, "--rows-file", rows_file]
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, env=env, timeout=max(timeout_s, 1))
        status = ("ok" if completed.returncode == 0
                  else f"failed (exit {completed.returncode})")
    except subprocess.TimeoutExpired:
        status = f"stopped at the deadline ({timeout_s:.0f} s)"
    print(f"[{part} part: {status}, {time.perf_counter() - started:.0f} s]",
          file=sys.stderr, flush=True)
    return status


def read_records(rows_file):
    with open(rows_file) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def summarise(records, cfg, peak_override):
    """Rows with FLOP rates and ratios added, and the header facts."""
    meta = {r["meta"]: r for r in records if "meta" in r}
    rows = [r for r in records if "meta" not in r]
    jax_meta, torch_meta = meta.get("jax", {}), meta.get("torch", {})
    multiply_adds = jax_meta.get("forward_multiply_adds") or torch_meta.get(
        "forward_multiply_adds")
    gpu_name = jax_meta.get("device") or torch_meta.get("device") or ""
    peak, peak_source = peak_tflops_for(gpu_name, peak_override)
    flops_per_image = (training_flops_per_image(forward_flops(multiply_adds),
                                                cfg["pgd_steps"])
                       if multiply_adds else None)
    hand = {r["batch"]: r["images_per_s"] for r in rows if r["implementation"] == HAND}
    for row in rows:
        tflops = (row["images_per_s"] * flops_per_image / 1e12
                  if flops_per_image else None)
        row["tflops"] = tflops
        row["peak_fraction"] = tflops / peak if (tflops and peak) else None
        if row["implementation"] == FIT and row["batch"] in hand:
            row["note"] = f"fit / hand {row['images_per_s'] / hand[row['batch']]:.2f}"
    rows.sort(key=lambda r: (r["batch"], ROW_ORDER.index(r["implementation"])))
    return rows, {
        "meta": meta, "gpu_name": gpu_name, "peak": peak, "peak_source": peak_source,
        "multiply_adds": multiply_adds, "flops_per_image": flops_per_image,
    }


def target_verdict(rows, facts):
    fit = [r for r in rows if r["implementation"] == FIT and r["batch"] == TARGET_BATCH]
    if not fit:
        return f"target: not measured (no robustlab fit row at batch {TARGET_BATCH})"
    measured = fit[0]["images_per_s"]
    if not is_target_gpu(facts["gpu_name"]):
        return (f"target ({TARGET_IMAGES_PER_S} images/s at batch {TARGET_BATCH} on "
                f"H100/H200): not applicable on this device ({measured:.0f} images/s)")
    met = "MET" if measured >= TARGET_IMAGES_PER_S else "NOT MET"
    return (f"target {TARGET_IMAGES_PER_S} images/s at batch {TARGET_BATCH}: {met} "
            f"(robustlab fit {measured:.0f} images/s)")


def layout_check(meta):
    jax_meta, torch_meta = meta.get("jax"), meta.get("torch")
    if not (jax_meta and torch_meta):
        return "layouts: only one framework measured"
    same = all(jax_meta[k] == torch_meta[k]
               for k in ("forward_multiply_adds", "trainable_parameters"))
    return ("layouts: Keras and PyTorch networks have the same parameters and "
            "multiply-adds" if same else
            "layouts DIFFER: " + ", ".join(
                f"{k} keras {jax_meta[k]} torch {torch_meta[k]}"
                for k in ("forward_multiply_adds", "trainable_parameters")))


def format_table(rows, facts, cfg, statuses):
    meta = facts["meta"]
    lines = []
    if cfg["smoke"]:
        lines.append("SMOKE RUN: tiny network, few steps; checks the script, "
                     "says nothing about GPU speed")
    for part in ("jax", "torch"):
        if part in meta:
            lines.append(f"{part}: {meta[part]['device']}; {meta[part]['versions']}")
    if "jax" in meta:
        differ = meta["jax"]["settings_differ_from_cifar10_rice"]
        lines.append(f"keras policy {meta['jax']['policy']}; settings differing from "
                     "cifar10_rice: " + (", ".join(
                         f"{k} {ours:g} (experiment {theirs:g})"
                         for k, (ours, theirs) in differ.items()) or "none"))
    lines.append(
        f"PreAct ResNet-18 width {cfg['width']}, 32x32x3, PGD-{cfg['pgd_steps']} "
        f"(eps 8/255, step 2/255), SGD momentum {cfg['momentum']}, wd "
        f"{cfg['weight_decay']}; median of {cfg['repeats']} repeats of "
        f"{cfg['steps']} steps after a warm-up of {cfg['steps']} steps")
    if facts["multiply_adds"]:
        lines.append(
            f"forward per image: {facts['multiply_adds'] / 1e9:.4f} G multiply-adds = "
            f"{forward_flops(facts['multiply_adds']) / 1e9:.4f} GFLOPs; training "
            f"(2k+3 = {2 * cfg['pgd_steps'] + 3} forwards): "
            f"{facts['flops_per_image'] / 1e9:.3f} GFLOPs per image")
    peak = facts["peak"]
    lines.append(f"dense bf16 peak: {f'{peak:.0f} TFLOP/s' if peak else 'n/a'} "
                 f"({facts['peak_source']})")
    lines.append(layout_check(meta))
    header = (f"{'implementation':18s} {'batch':>5s} {'images/s':>9s} {'ms/step':>8s} "
              f"{'TFLOP/s':>8s} {'of peak':>7s} {'compile s':>9s}  {'data':35s} note")
    lines += [header, "-" * len(header)]
    for r in rows:
        tflops = f"{r['tflops']:8.1f}" if r["tflops"] is not None else f"{'n/a':>8s}"
        fraction = (f"{100 * r['peak_fraction']:6.1f}%" if r["peak_fraction"] is not None
                    else f"{'n/a':>7s}")
        lines.append(
            f"{r['implementation']:18s} {r['batch']:5d} {r['images_per_s']:9.1f} "
            f"{r['step_ms']:8.2f} {tflops} {fraction} {r['compile_s']:9.1f}  "
            f"{r['data']:35s} {r['note']}")
    lines.append(target_verdict(rows, facts))
    lines.append(f"earlier on H100/H200: {EARLIER_RESULTS}")
    if "jax_end" in meta:
        lines.append("tensorflow imported by the JAX part: "
                     + ("YES " + ", ".join(meta["jax_end"]["tensorflow_modules"])
                        if meta["jax_end"]["tensorflow_imported"] else "no"))
    lines += [f"{part} part: {status}" for part, status in statuses.items()]
    return "\n".join(lines)


def orchestrate(args, argv):
    cfg = run_settings(args)
    parts = ["jax"] + ([] if args.skip_torch else ["torch"])
    deadline = time.perf_counter() + args.deadline_s
    statuses = {}
    with tempfile.TemporaryDirectory() as folder:
        rows_file = os.path.join(folder, "rows.jsonl")
        open(rows_file, "w").close()
        for i, part in enumerate(parts):
            remaining = deadline - time.perf_counter()
            # The JAX part (the target's) may use 60% of what is left when
            # the torch part still has to run.
            share = 0.6 if i < len(parts) - 1 else 1.0
            if part == "torch" and importlib.util.find_spec("torch") is None:
                # Its subprocess died on `import torch` with a traceback.
                statuses[part] = ("not run: torch is not installed (pip install -e "
                                  "'.[bench]'), or pass --skip-torch")
                continue
            statuses[part] = run_part(part, argv, rows_file, remaining * share)
        records = read_records(rows_file)
    rows, facts = summarise(records, cfg, args.peak_tflops)
    table = format_table(rows, facts, cfg, statuses)
    print(table, flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_training.txt"), "w") as handle:
            handle.write(table + "\n")
        with open(os.path.join(args.out, "gpu_training.json"), "w") as handle:
            json.dump({"settings": cfg, "facts": facts, "rows": rows,
                       "statuses": statuses}, handle, indent=1)
    return table, facts, statuses


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.part == "jax":
        return run_jax_part(run_settings(args), args.rows_file)
    if args.part == "torch":
        return run_torch_part(run_settings(args), args.rows_file)
    _, facts, statuses = orchestrate(args, argv)
    failed = [p for p, s in statuses.items() if s != "ok"]
    tensorflow_imported = facts["meta"].get("jax_end", {}).get("tensorflow_imported")
    if args.smoke and (failed or tensorflow_imported):
        # The smoke run is the check that the script works before GPU time is
        # spent on it: any failed part, or TensorFlow pulled in, fails it.
        sys.exit(1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
