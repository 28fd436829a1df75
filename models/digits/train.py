#!/usr/bin/env python3
"""Train Kiln's bundled default model: a small CNN for 8x8 handwritten digits.

Data: scikit-learn's bundled digits set (sklearn.datasets.load_digits, 1,797
8x8 greyscale images, values 0..16, shipped inside scikit-learn, no download),
scaled to [0, 1].  A stratified 80/20 split (seed 0) gives 1,437 training and
360 held-out images; the held-out images are used only for the final report.

Model (what a PyTorch export of the same network looks like, BatchNorm kept as
separate inference-mode nodes so the optimiser has something to fold):

    image [batch,1,8,8]
    Conv 3x3 pad 1 (16, no bias) -> BatchNormalization -> Relu -> MaxPool 2x2
    Conv 3x3 pad 1 (32, no bias) -> BatchNormalization -> Relu -> MaxPool 2x2
    Flatten -> Gemm 128->64 -> Relu -> Gemm 64->10 -> logits [batch,10]

Training is plain numpy (im2col convolutions, hand-written backward passes,
Adam), deterministic for a fixed seed, about a minute on two CPU cores.  The
model is exported with onnx.helper (opset 17, dynamic batch dimension `batch`)
and checked with onnxruntime: its held-out accuracy must equal numpy's and its
logits must agree to 1e-4.

    .venv/bin/pip install -r python/requirements-train.txt
    .venv/bin/python models/digits/train.py          # writes next to this file

Writes digits.onnx, heldout_images.npy (float32 [N,1,8,8]) and
heldout_labels.npy (int64 [N]).
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 0
EPOCHS = 40
BATCH = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4
BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: running = (1-m)*running + m*batch
OPSET = 17


# ----------------------------------------------------------------------------
# layers (forward returns output and a cache; backward returns input gradient)

def im2col3x3(x):
    """x [N,C,H,W] -> columns [N*H*W, C*9] of zero-padded 3x3 neighbourhoods."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N,C,H,W,3,3
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)


def conv_fwd(x, wt):
    n, _, h, w = x.shape
    cols = im2col3x3(x)
    out = cols @ wt.reshape(wt.shape[0], -1).T  # N*H*W, F
    return out.reshape(n, h, w, -1).transpose(0, 3, 1, 2), (x.shape, cols)


def conv_bwd(dout, wt, cache):
    (n, c, h, w), cols = cache
    f = wt.shape[0]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, f)
    dw = (d.T @ cols).reshape(wt.shape)
    dcols = (d @ wt.reshape(f, -1)).reshape(n, h, w, c, 3, 3)
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dout.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + w] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, 1:-1, 1:-1], dw


def bn_fwd(x, p, name, train):
    g, b = p[name + ".weight"], p[name + ".bias"]
    rm, rv = p[name + ".running_mean"], p[name + ".running_var"]
    if train:
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        m = x.size // x.shape[1]
        rm *= 1 - BN_MOMENTUM
        rm += BN_MOMENTUM * mean
        rv *= 1 - BN_MOMENTUM
        rv += BN_MOMENTUM * var * m / (m - 1)  # running variance is unbiased
    else:
        mean, var = rm, rv
    inv = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (x - mean[None, :, None, None]) * inv[None, :, None, None]
    return xhat * g[None, :, None, None] + b[None, :, None, None], (xhat, inv, g)


def bn_bwd(dout, cache):
    xhat, inv, g = cache
    m = dout.size // dout.shape[1]
    dg = (dout * xhat).sum(axis=(0, 2, 3))
    db = dout.sum(axis=(0, 2, 3))
    dxhat = dout * g[None, :, None, None]
    dx = (inv[None, :, None, None] / m) * (
        m * dxhat
        - dxhat.sum(axis=(0, 2, 3))[None, :, None, None]
        - xhat * (dxhat * xhat).sum(axis=(0, 2, 3))[None, :, None, None])
    return dx, dg, db


def pool_fwd(x):
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)
    return np.take_along_axis(win, arg[..., None], -1)[..., 0], (x.shape, arg)


def pool_bwd(dout, cache):
    (n, c, h, w), arg = cache
    dwin = np.zeros(dout.shape + (4,), dtype=dout.dtype)
    np.put_along_axis(dwin, arg[..., None], dout[..., None], -1)
    return dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


# ----------------------------------------------------------------------------
# the network

def init_params(rng):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def uniform_bias(n, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, n).astype(np.float32)

    p = {
        "conv1.weight": he((16, 1, 3, 3), 9),
        "conv2.weight": he((32, 16, 3, 3), 16 * 9),
        "fc1.weight": he((64, 128), 128),
        "fc1.bias": uniform_bias(64, 128),
        "fc2.weight": he((10, 64), 64) * np.float32(0.5),
        "fc2.bias": uniform_bias(10, 64),
    }
    for name, ch in (("bn1", 16), ("bn2", 32)):
        p[name + ".weight"] = np.ones(ch, np.float32)
        p[name + ".bias"] = np.zeros(ch, np.float32)
        p[name + ".running_mean"] = np.zeros(ch, np.float32)
        p[name + ".running_var"] = np.ones(ch, np.float32)
    return p


TRAINABLE = ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight",
             "bn2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def forward(p, x, train):
    caches = {}
    h = x
    for i in (1, 2):
        h, caches[f"conv{i}"] = conv_fwd(h, p[f"conv{i}.weight"])
        h, caches[f"bn{i}"] = bn_fwd(h, p, f"bn{i}", train)
        caches[f"relu{i}"] = h > 0
        h = h * caches[f"relu{i}"]
        h, caches[f"pool{i}"] = pool_fwd(h)
    caches["flat_shape"] = h.shape
    f = h.reshape(h.shape[0], -1)
    caches["fc1_in"] = f
    h = f @ p["fc1.weight"].T + p["fc1.bias"]
    caches["relu3"] = h > 0
    h = h * caches["relu3"]
    caches["fc2_in"] = h
    logits = h @ p["fc2.weight"].T + p["fc2.bias"]
    return logits, caches


def backward(p, dlogits, c):
    g = {}
    g["fc2.weight"] = dlogits.T @ c["fc2_in"]
    g["fc2.bias"] = dlogits.sum(0)
    dh = (dlogits @ p["fc2.weight"]) * c["relu3"]
    g["fc1.weight"] = dh.T @ c["fc1_in"]
    g["fc1.bias"] = dh.sum(0)
    dh = (dh @ p["fc1.weight"]).reshape(c["flat_shape"])
    for i in (2, 1):
        dh = pool_bwd(dh, c[f"pool{i}"]) * c[f"relu{i}"]
        dh, g[f"bn{i}.weight"], g[f"bn{i}.bias"] = bn_bwd(dh, c[f"bn{i}"])
        dh, g[f"conv{i}.weight"] = conv_bwd(dh, p[f"conv{i}.weight"], c[f"conv{i}"])
    return g


def softmax_xent(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(1, keepdims=True)
    n = len(labels)
    loss = -np.log(prob[np.arange(n), labels] + 1e-12).mean()
    d = prob
    d[np.arange(n), labels] -= 1
    return loss, d / n


def predict(p, x):
    out = []
    for i in range(0, len(x), 256):
        out.append(forward(p, x[i:i + 256], train=False)[0])
    return np.concatenate(out)


def train(x_train, y_train, rng, log):
    p = init_params(rng)
    m = {k: np.zeros_like(p[k]) for k in TRAINABLE}
    v = {k: np.zeros_like(p[k]) for k in TRAINABLE}
    b1, b2, step = 0.9, 0.999, 0
    steps_per_epoch = (len(x_train) + BATCH - 1) // BATCH
    total = EPOCHS * steps_per_epoch
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            logits, cache = forward(p, x_train[idx], train=True)
            loss, dlogits = softmax_xent(logits, y_train[idx])
            losses.append(loss)
            grads = backward(p, dlogits.astype(np.float32), cache)
            step += 1
            lr = LR * 0.5 * (1 + np.cos(np.pi * step / total))  # cosine decay
            for k in TRAINABLE:
                gk = grads[k]
                if k.endswith(".weight") and not k.startswith("bn"):
                    gk = gk + WEIGHT_DECAY * p[k]
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mh = m[k] / (1 - b1 ** step)
                vh = v[k] / (1 - b2 ** step)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        if epoch % 5 == 4 or epoch == EPOCHS - 1:
            acc = (predict(p, x_train).argmax(1) == y_train).mean()
            log(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  train acc {acc:.4f}")
    return p


# ----------------------------------------------------------------------------
# ONNX export

def export(p, path):
    nodes, inits = [], []

    def init(name):
        inits.append(numpy_helper.from_array(p[name].astype(np.float32), name))
        return name

    h = "image"
    for i in (1, 2):
        nodes.append(helper.make_node(
            "Conv", [h, init(f"conv{i}.weight")], [f"/conv{i}/Conv_output_0"],
            name=f"/conv{i}/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
            strides=[1, 1], dilations=[1, 1], group=1))
        nodes.append(helper.make_node(
            "BatchNormalization",
            [f"/conv{i}/Conv_output_0", init(f"bn{i}.weight"), init(f"bn{i}.bias"),
             init(f"bn{i}.running_mean"), init(f"bn{i}.running_var")],
            [f"/bn{i}/BatchNormalization_output_0"], name=f"/bn{i}/BatchNormalization",
            epsilon=BN_EPS, momentum=1 - BN_MOMENTUM))
        nodes.append(helper.make_node(
            "Relu", [f"/bn{i}/BatchNormalization_output_0"], [f"/relu{i}/Relu_output_0"],
            name=f"/relu{i}/Relu"))
        nodes.append(helper.make_node(
            "MaxPool", [f"/relu{i}/Relu_output_0"], [f"/pool{i}/MaxPool_output_0"],
            name=f"/pool{i}/MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0],
            ceil_mode=0))
        h = f"/pool{i}/MaxPool_output_0"
    nodes.append(helper.make_node("Flatten", [h], ["/flatten/Flatten_output_0"],
                                  name="/flatten/Flatten", axis=1))
    nodes.append(helper.make_node(
        "Gemm", ["/flatten/Flatten_output_0", init("fc1.weight"), init("fc1.bias")],
        ["/fc1/Gemm_output_0"], name="/fc1/Gemm", alpha=1.0, beta=1.0, transB=1))
    nodes.append(helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu3/Relu_output_0"],
                                  name="/relu3/Relu"))
    nodes.append(helper.make_node(
        "Gemm", ["/relu3/Relu_output_0", init("fc2.weight"), init("fc2.bias")],
        ["logits"], name="/fc2/Gemm", alpha=1.0, beta=1.0, transB=1))

    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kiln-digits-train", producer_version="1",
        doc_string="8x8 digit classifier (sklearn digits); input image in [0,1], "
                   "output unnormalised logits for classes 0..9. See models/digits/README.md.")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return model


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    def log(msg):
        print(msg, flush=True)

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_held, y_train, y_held = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y)
    log(f"train {len(x_train)}  held-out {len(x_held)}")

    rng = np.random.default_rng(SEED)
    params = train(x_train, y_train, rng, log)

    np_logits = predict(params, x_held)
    np_acc = float((np_logits.argmax(1) == y_held).mean())

    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, "digits.onnx")
    export(params, onnx_path)
    np.save(os.path.join(args.out_dir, "heldout_images.npy"), np.ascontiguousarray(x_held, np.float32))
    np.save(os.path.join(args.out_dir, "heldout_labels.npy"), y_held.astype(np.int64))

    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"image": x_held})[0]
    ort_acc = float((ort_logits.argmax(1) == y_held).mean())
    max_diff = float(np.abs(ort_logits - np_logits).max())
    correct = int((ort_logits.argmax(1) == y_held).sum())
    log(f"held-out accuracy: numpy {np_acc:.4f}  onnxruntime {ort_acc:.4f} "
        f"({correct}/{len(y_held)})  max |logit diff| {max_diff:.2e}")
    log(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes)")
    if ort_acc != np_acc or max_diff > 1e-4:
        log("error: onnxruntime disagrees with the numpy model")
        return 1
    if ort_acc < 0.95:
        log("error: held-out accuracy below 0.95")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
