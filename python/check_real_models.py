#!/usr/bin/env python3
"""Run real models end to end through Kiln and compare with ONNX Runtime.

For each model in MODELS: make random inputs (numpy, fixed seed), run ONNX
Runtime (CPU) for the reference outputs, save the inputs as .npy, run

    $KILN run MODEL --input NAME=PATH.npy [...] --output-dir OUTDIR

and compare every output OUTDIR/<name>.npy (the ONNX output name with each
character outside [A-Za-z0-9_.-] replaced by '_') with ONNX Runtime's by
relative L2 error ||kiln - ort|| / ||ort|| in float64.  One line per output:

    nudenet-320n output0 [1,22,2100] rel_l2=3.1e-07 ok

then `real-models: P passed, F failed`.  Exit status 0 only if every output of
every model passed.

KILN is the kiln command (split like a shell word list); by default
target/release/kiln if it exists, else `cargo run --release -q -p kiln-cli --`.

    scripts/check-real-models                 # all models
    scripts/check-real-models digits ppocr-det  # some models
    scripts/check-real-models --list
    scripts/check-real-models --self-test     # fake kiln with ONNX Runtime (tests this script)

Add a model by appending a Model(...) to MODELS.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import locate  # noqa: E402

DEFAULT_THRESHOLD = 1e-4
SEED = 0


@dataclass
class Model:
    name: str  # short name, also the locate.py asset name unless `path` is given
    inputs: dict  # input name -> concrete shape (every model input must be listed)
    threshold: float = DEFAULT_THRESHOLD  # max relative L2 error per output
    low: float = 0.0  # inputs are uniform in [low, high)
    high: float = 1.0
    path: str = None  # model file; default: locate.locate(name)
    kiln_args: list = field(default_factory=list)  # extra arguments for `kiln run`
    # ONNX Runtime's Sigmoid is a polynomial approximation, off by up to ~1e-7 absolute:
    # 100% of the value where outputs are ~1e-7. With this set, outputs made by a
    # Sigmoid node are compared with the exact sigmoid (f64) of ONNX Runtime's own
    # input to that Sigmoid instead.
    exact_sigmoid: bool = False
    # Integer inputs: name -> (low, high) of uniform random int64 values.
    int_ranges: dict = field(default_factory=dict)
    # Exported on the device by python/export_torch_models.py --keep-weights into
    # --torch-models DIR; checked only when that folder is given.
    torch: bool = False

    def model_path(self):
        if self.torch:
            if not TORCH_DIR:
                raise LookupError("exported models need --torch-models DIR")
            return os.path.join(TORCH_DIR, f"{self.name}.onnx")
        return self.path if self.path else locate.locate(self.name)


TORCH_DIR = None


MODELS = [
    # YOLOv8n detector shipped by nudenet 3.4.2 (opset 17, dims batch/height/width dynamic).
    Model("nudenet-320n", {"images": (1, 3, 320, 320)}),
    # PP-OCRv4 text detector shipped by rapidocr-onnxruntime 1.4.4 (opset 12, N,3,H,W dynamic).
    # Inputs as its preprocessing makes them ((pixel/255 - mean) / std, about [-2, 2.6]):
    # uniform [0, 1) drives every output logit below -11, where sigmoid outputs ~1e-7
    # and ONNX Runtime's approximate sigmoid is off by 100% of the value.
    Model("ppocr-det", {"x": (1, 3, 320, 320)}, low=-2.0, high=2.5, exact_sigmoid=True),
    # PP-OCRv4 text recogniser (opset 12, input N,3,?,W: height 48 in practice).
    Model("ppocr-rec", {"x": (1, 3, 48, 320)}),
    # The bundled digits CNN (opset 17, batch dynamic).
    Model("digits", {"image": (4, 1, 8, 8)}),
    # torchvision and transformers models with random weights (export_torch_models.py).
    Model("resnet50", {"input": (1, 3, 224, 224)}, low=-1.0, high=1.0, torch=True),
    Model("mobilenetv2", {"input": (1, 3, 224, 224)}, low=-1.0, high=1.0, torch=True),
    Model("bert-base", {"input_ids": (1, 128), "attention_mask": (1, 128), "token_type_ids": (1, 128)},
          int_ranges={"input_ids": (0, 30000), "attention_mask": (1, 2), "token_type_ids": (0, 2)}, torch=True),
]


def sanitize(name):
    """File stem kiln uses for an output (or input) called `name`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def rel_l2(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    den = np.linalg.norm(want)
    num = np.linalg.norm(got - want)
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return float(num / den)


def shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def ort_session(path):

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def make_inputs(model, sess):
    rng = np.random.default_rng(SEED)
    declared = {i.name: i for i in sess.get_inputs()}
    missing = set(declared) - set(model.inputs)
    unknown = set(model.inputs) - set(declared)
    if missing or unknown:
        raise RuntimeError(f"model inputs are {sorted(declared)}; MODELS lists "
                           f"{sorted(model.inputs)}")
    feeds = {}
    for name, shape in model.inputs.items():
        if name in model.int_ranges and declared[name].type == "tensor(int64)":
            low, high = model.int_ranges[name]
            feeds[name] = rng.integers(low, high, size=shape, dtype=np.int64)
            continue
        if declared[name].type != "tensor(float)":
            raise RuntimeError(f"input {name} is {declared[name].type}; only float inputs "
                               f"are generated (extend make_inputs)")
        feeds[name] = rng.uniform(model.low, model.high, size=shape).astype(np.float32)
    return feeds


def kiln_command():
    env = os.environ.get("KILN")
    if env:
        return shlex.split(env)
    binary = os.path.join(REPO, "target", "release", "kiln")
    if os.access(binary, os.X_OK):
        return [binary]
    return ["cargo", "run", "--release", "-q", "-p", "kiln-cli", "--"]


def run_kiln(cmd, model_path, input_files, out_dir, extra, timeout):
    argv = list(cmd) + ["run", model_path]
    for name, path in input_files.items():
        argv += ["--input", f"{name}={path}"]
    argv += ["--output-dir", out_dir] + list(extra)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"kiln timed out after {timeout}s: {shlex.join(argv)}")
    except OSError as e:
        raise RuntimeError(f"cannot run kiln ({e}): {shlex.join(argv)}")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        if len(err) > 8000:
            err = "...\n" + err[-8000:]
        raise RuntimeError(f"kiln exited with status {proc.returncode}: {shlex.join(argv)}"
                           + "".join("\n    " + line for line in err.splitlines()))
    return time.monotonic() - t0


def exact_sigmoid_refs(path, feeds, out_names, refs):
    """Replaces the reference of each output made by a Sigmoid node with the exact
    sigmoid of ONNX Runtime's input to that node."""
    import onnx

    m = onnx.load(path)
    sig_in = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Sigmoid"}
    wanted = [sig_in[o] for o in out_names if o in sig_in]
    if not wanted:
        return refs
    have = {o.name for o in m.graph.output}
    for w in wanted:
        if w not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=w))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = dict(zip(wanted, sess.run(wanted, feeds)))
    out = []
    for name, ref in zip(out_names, refs):
        if name in sig_in:
            x = logits[sig_in[name]].astype(np.float64)
            print(f"  note: {name} compared with the exact sigmoid of onnxruntime's '{sig_in[name]}'", flush=True)
            ref = (1.0 / (1.0 + np.exp(-x))).astype(ref.dtype)
        out.append(ref)
    return out


def check_model(model, kiln, work, timeout, verbose):
    """Returns a list of (output name, passed) after printing one line per output.
    Raises RuntimeError for errors that stop the whole model."""
    path = model.model_path()
    sess = ort_session(path)
    feeds = make_inputs(model, sess)
    out_names = [o.name for o in sess.get_outputs()]
    t0 = time.monotonic()
    refs = sess.run(out_names, feeds)
    ort_s = time.monotonic() - t0
    if model.exact_sigmoid:
        refs = exact_sigmoid_refs(path, feeds, out_names, refs)

    mdir = os.path.join(work, model.name)
    in_dir, out_dir = os.path.join(mdir, "inputs"), os.path.join(mdir, "outputs")
    os.makedirs(in_dir)
    os.makedirs(out_dir)
    input_files = {}
    for name, value in feeds.items():
        input_files[name] = os.path.join(in_dir, sanitize(name) + ".npy")
        np.save(input_files[name], value)

    kiln_s = run_kiln(kiln, path, input_files, out_dir, model.kiln_args, timeout)
    if verbose:
        print(f"  {model.name}: ort {ort_s:.2f}s, kiln {kiln_s:.2f}s", flush=True)

    results = []
    for name, ref in zip(out_names, refs):
        label = f"{model.name} {name} {shape_str(ref.shape)}"
        fpath = os.path.join(out_dir, sanitize(name) + ".npy")
        if not os.path.exists(fpath):
            print(f"{label} FAILED: kiln wrote no {os.path.basename(fpath)} "
                  f"(found: {', '.join(sorted(os.listdir(out_dir))) or 'nothing'})", flush=True)
            results.append((name, False))
            continue
        try:
            got = np.load(fpath, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file is a failure
            print(f"{label} FAILED: cannot read {fpath}: {e}", flush=True)
            results.append((name, False))
            continue
        if got.shape != ref.shape:
            print(f"{label} FAILED: kiln shape {shape_str(got.shape)}", flush=True)
            results.append((name, False))
            continue
        if got.dtype != ref.dtype:
            print(f"{label} FAILED: kiln dtype {got.dtype}, onnxruntime {ref.dtype}", flush=True)
            results.append((name, False))
            continue
        err = rel_l2(got, ref)
        ok = bool(np.isfinite(err) and err <= model.threshold)  # NaN anywhere makes err NaN
        verdict = "ok" if ok else f"FAILED (threshold {model.threshold:.0e})"
        print(f"{label} rel_l2={err:.1e} {verdict}", flush=True)
        results.append((name, ok))
    return results


# ----------------------------------------------------------------------------
# a stand-in for `kiln run`, backed by ONNX Runtime (for --self-test)

def fake_kiln(argv):
    ap = argparse.ArgumentParser(prog="fake-kiln")
    ap.add_argument("cmd", choices=["run"])
    ap.add_argument("model")
    ap.add_argument("--input", action="append", default=[])
    ap.add_argument("--output-dir", required=True)
    a = ap.parse_args(argv)
    sess = ort_session(a.model)
    feeds = {}
    for spec in a.input:
        name, _, path = spec.partition("=")
        feeds[name] = np.load(path)
    names = [o.name for o in sess.get_outputs()]
    noise = float(os.environ.get("KILN_FAKE_NOISE", "0"))  # relative noise, to test failures
    rng = np.random.default_rng(1)
    for name, value in zip(names, sess.run(names, feeds)):
        if noise:
            value = (value + noise * np.linalg.norm(value) / np.sqrt(value.size)
                     * rng.standard_normal(value.shape)).astype(value.dtype)
        np.save(os.path.join(a.output_dir, sanitize(name) + ".npy"), value)
    return 0


# ----------------------------------------------------------------------------

def main(argv):
    if argv[:1] == ["fake-kiln"]:
        return fake_kiln(argv[1:])
    ap = argparse.ArgumentParser(description="Compare Kiln with ONNX Runtime on real models.",
                                 epilog="KILN: kiln command (default target/release/kiln or "
                                        "cargo run --release -q -p kiln-cli --)")
    ap.add_argument("models", nargs="*", help="model names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("--self-test", action="store_true",
                    help="use an ONNX Runtime stand-in for kiln (tests this script)")
    ap.add_argument("--keep", metavar="DIR", help="write inputs/outputs under DIR and keep them")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("KILN_TIMEOUT", 1200)),
                    help="seconds per kiln run (default 1200, env KILN_TIMEOUT)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print timings")
    ap.add_argument("--kiln-args", default="", help="more arguments for every `kiln run` "
                    "(e.g. '--backend cuda --fp16')")
    ap.add_argument("--threshold", type=float, help="relative L2 threshold for every output "
                    "(default: each model's own)")
    ap.add_argument("--torch-models", metavar="DIR", help="also check the PyTorch models "
                    "exported into DIR by python/export_torch_models.py --keep-weights")
    args = ap.parse_args(argv)
    global TORCH_DIR
    TORCH_DIR = args.torch_models

    by_name = {m.name: m for m in MODELS}
    if args.list:
        for m in MODELS:
            try:
                where = m.model_path()
            except LookupError as e:
                where = f"missing ({e})"
            ins = " ".join(f"{k}={shape_str(v)}" for k, v in m.inputs.items())
            print(f"{m.name}\t{ins}\tthreshold={m.threshold:g}\t{where}")
        return 0
    unknown = [n for n in args.models if n not in by_name]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(by_name)}",
              file=sys.stderr)
        return 2
    default = [m for m in MODELS if TORCH_DIR or not m.torch]
    selected = [by_name[n] for n in args.models] if args.models else default
    extra = shlex.split(args.kiln_args)
    selected = [dataclasses.replace(m, kiln_args=m.kiln_args + extra,
                                    threshold=args.threshold or m.threshold) for m in selected]
    if args.self_test:
        # The fake kiln *is* ONNX Runtime: compare it with ONNX Runtime's own outputs.
        selected = [dataclasses.replace(m, exact_sigmoid=False) for m in selected]

    kiln = [sys.executable, os.path.abspath(__file__), "fake-kiln"] if args.self_test \
        else kiln_command()
    if args.verbose or args.self_test:
        print(f"kiln: {shlex.join(kiln)}", flush=True)

    if args.keep:
        work = os.path.abspath(args.keep)
        for m in selected:
            shutil.rmtree(os.path.join(work, m.name), ignore_errors=True)
        os.makedirs(work, exist_ok=True)
    else:
        work = tempfile.mkdtemp(prefix="kiln-real-models-")
    passed = failed = 0
    try:
        for m in selected:
            try:
                results = check_model(m, kiln, work, args.timeout, args.verbose)
            except (RuntimeError, LookupError, OSError) as e:
                print(f"{m.name} ERROR: {e}", flush=True)
                failed += 1
                continue
            except Exception as e:  # noqa: BLE001 - e.g. onnxruntime failing on the model
                print(f"{m.name} ERROR: {type(e).__name__}: {e}", flush=True)
                failed += 1
                continue
            for _, ok in results:
                passed += ok
                failed += not ok
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"real-models: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
