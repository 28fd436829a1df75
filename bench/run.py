#!/usr/bin/env python3
"""Kiln's benchmark suite: Kiln beside PyTorch on the same models, in the same run, on the
same GPU, with the GPU's measured matrix-unit ceiling. See bench/README.md.

Run on the device machine from the repository root:

    python3 bench/run.py --kiln PATH/TO/kiln --assets .gpu-bundle/assets \
        --wheels .gpu-bundle/wheels --out $OUT/bench \
        [--models resnet50,mobilenetv2,bert,yolov8n] [--batches 1,64] [--quick]

`--kiln` may also name the bundle's bin.tar.xz (its `kiln` is extracted). Nothing here
crashes the suite: a failing export, Kiln build or bench, torch.compile or ultralytics
install becomes a row or note with the reason. Results are rewritten after every step
(OUT/<date>-<gpu>.md and .json), so a run killed by a time limit still leaves them.

`--dry-run` tests the script without a GPU: a fake kiln (bench/fake_kiln.py), PyTorch on
the CPU when it is installed (few iterations, small matmuls, no torch.compile unless
--compile), and everything else as on the device.
"""
import argparse
import copy
import datetime
import glob
import importlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
T0 = time.time()

# name -> how to make inputs; `dims` are the per-item dims after the batch dim.
MODELS = {
    "resnet50": {"kind": "image", "dims": (3, 224, 224)},
    "mobilenetv2": {"kind": "image", "dims": (3, 224, 224)},
    "bert": {"kind": "tokens", "dims": (128,)},
    "yolov8n": {"kind": "image", "dims": (3, 320, 320)},
}
PRECISIONS = ("fp32", "fp16")
# PyTorch modes timed for each precision (images; BERT drops the channels-last ones).
TORCH_MODES = {"fp32": ["eager32", "eager32cl"], "fp16": ["eager16", "eager16cl", "compile16"]}
COMPILE_ESTIMATE_S = 45.0  # first guess of one torch.compile (+ timing), before one is seen


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def short(e, n=300):
    s = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return s if len(s) <= n else s[: n - 3] + "..."


# ----------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kiln", required=True, help="the kiln command (a path, a shell word list, or the bundle's bin.tar.xz)")
    p.add_argument("--assets", default=".gpu-bundle/assets", help="folder with nudenet's 320n.onnx")
    p.add_argument("--wheels", default=".gpu-bundle/wheels", help="folder with the ultralytics and ultralytics-thop wheels")
    p.add_argument("--out", required=True, help="folder for the results (.md, .json) and logs")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    p.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated, of: fp32, fp16")
    p.add_argument("--quick", action="store_true", help="shorter: kiln bench --duration 1, 50 PyTorch iterations")
    p.add_argument("--budget", type=float, default=510.0,
                   help="seconds of wall time for the whole run (default 510); torch.compile cases that "
                        "would not fit are skipped, and are noted")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile", action="store_true", help="with --dry-run: run torch.compile anyway")
    p.add_argument("--workdir", default=None, help="exported models and plans (default: a folder under /tmp)")
    p.add_argument("--site", default="/tmp/site", help="where the carried wheels are installed")
    p.add_argument("--tag", default="", help="suffix of the result files' name (e.g. when one day's run is split)")
    p.add_argument("--dry-run", action="store_true", help="no GPU needed: CPU PyTorch (if any), few iterations")
    a = p.parse_args(argv)
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in a.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; known: {list(MODELS)}")
    try:
        a.batches = [int(b) for b in a.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches: expected integers, got {a.batches!r}")
    if not a.batches or min(a.batches) < 1:
        p.error("--batches: need positive integers")
    a.precisions = [x.strip() for x in a.precisions.split(",") if x.strip()]
    if any(x not in PRECISIONS for x in a.precisions):
        p.error(f"--precisions: of {PRECISIONS}")
    a.kiln_duration = 1 if a.quick else 3
    a.kiln_warmup = 200
    a.iters = 50 if a.quick else 100
    a.torch_warmup = 10
    if a.dry_run:
        a.iters, a.torch_warmup = 3, 1
    return a


# ----------------------------------------------------------------------------- results


class Results:
    """Everything measured; rewritten to OUT/<date>-<gpu>.{md,json} after every step."""

    def __init__(self, args, argv):
        self.args = args
        self.data = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(x) for x in [sys.executable, *argv]),
            "settings": {k: v for k, v in vars(args).items()},
            "env": {},
            "ceiling": {},
            "models": {},
            "kiln": [],
            "torch": [],
            "rows": [],
            "commands": [],
            "notes": [],
            "elapsed_s": 0.0,
            "complete": False,
        }
        self.base = None

    def note(self, msg):
        log("note: " + msg)
        self.data["notes"].append(msg)

    def set_gpu(self, name):
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-gpu"
        os.makedirs(self.args.out, exist_ok=True)
        tag = f"-{self.args.tag}" if self.args.tag else ""
        self.base = os.path.join(self.args.out, f"{self.data['date']}-{slug}{tag}")

    def save(self):
        if not self.base:
            return
        self.data["elapsed_s"] = round(time.time() - T0, 1)
        self.data["rows"] = build_rows(self.data)
        tmp = self.base + ".json.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.base + ".json")
        with open(self.base + ".md", "w") as f:
            f.write(markdown(self.data))


def kiln_entry(data, model, prec, batch):
    for k in data["kiln"]:
        if (k["model"], k["precision"], k["batch"]) == (model, prec, batch):
            return k
    return None


def build_rows(data):
    """One row per (model, batch, precision) that Kiln or PyTorch has a result for."""
    rows = []
    keys = []
    for e in data["kiln"] + data["torch"]:
        key = (e["model"], e["batch"], e["precision"])
        if key not in keys:
            keys.append(key)
    order = {m: i for i, m in enumerate(MODELS)}
    keys.sort(key=lambda k: (order.get(k[0], 99), k[1], PRECISIONS.index(k[2]) if k[2] in PRECISIONS else 9))
    for model, batch, prec in keys:
        r = {"model": model, "batch": batch, "precision": prec}
        k = kiln_entry(data, model, prec, batch)
        if k and k.get("ok"):
            r["kiln_gpu_ms"] = k["gpu_compute_median_ms"]
            r["kiln_e2e_ms"] = k["latency_median_ms"]
            r["kiln_items_s"] = k["items_per_s"]
        elif k:
            r["kiln_error"] = k.get("error", "failed")
        best = None
        errors = []
        for t in data["torch"]:
            if (t["model"], t["batch"], t["precision"]) != (model, batch, prec):
                continue
            if t.get("ok"):
                if best is None or t["median_ms"] < best["median_ms"]:
                    best = t
            else:
                errors.append(f"{t['mode']}: {t.get('error', 'failed')}")
        if best:
            r["torch_mode"] = best["mode"]
            r["torch_ms"] = best["median_ms"]
            r["torch_items_s"] = best["items_per_s"]
        if errors:
            r["torch_errors"] = errors
        if r.get("kiln_items_s") and r.get("torch_items_s"):
            r["ratio"] = r["kiln_items_s"] / r["torch_items_s"]
        flops = data["models"].get(model, {}).get("flops_per_item")
        ceil = data["ceiling"].get(prec, {}).get("tflops")
        if flops and r.get("kiln_items_s"):
            r["kiln_tflops"] = flops * r["kiln_items_s"] / 1e12
            if ceil:
                r["pct_ceiling"] = 100.0 * r["kiln_tflops"] / ceil
        if flops and r.get("torch_items_s"):
            r["torch_tflops"] = flops * r["torch_items_s"] / 1e12
            if ceil:
                r["torch_pct_ceiling"] = 100.0 * r["torch_tflops"] / ceil
        rows.append(r)
    return rows


HEADERS = ["model", "batch", "prec", "Kiln GPU ms", "Kiln e2e ms", "Kiln items/s",
           "PyTorch best", "PyTorch ms", "PyTorch items/s", "Kiln/PyTorch", "% ceiling"]


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def row_cells(r):
    kiln_err = r.get("kiln_error")
    torch_na = "n/a" if r.get("torch_errors") else "—"
    return [
        r["model"], str(r["batch"]), r["precision"],
        "error" if kiln_err else fmt(r.get("kiln_gpu_ms"), ".3f"),
        "error" if kiln_err else fmt(r.get("kiln_e2e_ms"), ".3f"),
        "error" if kiln_err else fmt(r.get("kiln_items_s"), ",.0f"),
        r.get("torch_mode", torch_na),
        fmt(r.get("torch_ms"), ".3f") if r.get("torch_ms") is not None else torch_na,
        fmt(r.get("torch_items_s"), ",.0f") if r.get("torch_items_s") is not None else torch_na,
        fmt(r.get("ratio"), ".2f") + ("×" if r.get("ratio") is not None else ""),
        fmt(r.get("pct_ceiling"), ".1f"),
    ]


def text_table(rows):
    cells = [HEADERS] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = []
    for j, c in enumerate(cells):
        lines.append("  ".join(s.ljust(w) if i < 3 or i == 6 else s.rjust(w) for i, (s, w) in enumerate(zip(c, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows):
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" if i < 3 or i == 6 else "---:" for i in range(len(HEADERS))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(row_cells(r)) + " |")
    return "\n".join(out)


def markdown(d):
    env = d["env"]
    s = d["settings"]
    lines = [f"# Kiln benchmark, {d['date']}, {env.get('gpu', '?')}", ""]
    if not d["complete"]:
        lines += [f"**Incomplete run** (results as of {d['elapsed_s']:.0f} s; the run was stopped or is still going).", ""]
    lines += [md_table(d["rows"]), ""]
    lines += [
        "Kiln GPU ms: median GPU compute time per batch (`gpu_compute_ms.median` of `kiln bench`); "
        "Kiln e2e ms: median end-to-end latency (`latency_ms.median`, with host↔device copies); "
        "items/s: images or sequences per second (Kiln: `throughput_qps` × batch; PyTorch: batch ÷ median). "
        "PyTorch ms: median over "
        f"{s['iters']} calls of the fastest mode (CUDA events around each call, after {s['torch_warmup']} warm-up calls; "
        "inputs already on the GPU). Kiln/PyTorch: ratio of items/s (above 1: Kiln faster). "
        "% ceiling: Kiln's achieved FLOP/s (FLOPs per item × items/s) as a share of the measured dense matmul "
        "throughput of its precision (fp16: FP16 tensor cores; fp32: true FP32, TF32 off, as Kiln's FP32).",
        "",
        "PyTorch modes: eager32 / eager16 (eager, NCHW), eager32cl / eager16cl (channels-last), compile16 "
        "(torch.compile mode=\"reduce-overhead\", fp16, channels-last for images). FP32 modes run with TF32 off "
        "(cuDNN and matmul).",
        "",
        "## Machine",
        "",
    ]
    for k in ("gpu", "driver", "sm_clock", "torch", "cuda", "cudnn", "transformers", "torchvision", "onnx", "python", "kiln", "ultralytics"):
        if k in env:
            lines.append(f"- {k}: {env[k]}")
    lines += ["", "## Matrix-unit ceiling (torch.matmul, dense, square)", ""]
    if d["ceiling"]:
        lines += ["| precision | n | median ms | TFLOP/s |", "|---|---:|---:|---:|"]
        for k, c in d["ceiling"].items():
            if c.get("tflops"):
                lines.append(f"| {k} ({c['what']}) | {c['n']} | {c['median_ms']:.3f} | {c['tflops']:.1f} |")
            else:
                lines.append(f"| {k} | {c.get('n', '')} | error | {c.get('error', '')} |")
    else:
        lines.append("not measured")
    lines += ["", "## FLOPs per item (torch.utils.flop_counter, batch 1)", ""]
    for m, info in d["models"].items():
        fl = info.get("flops_per_item")
        extra = f" — {info['flops_error']}" if info.get("flops_error") else ""
        lines.append(f"- {m}: {fl / 1e9:.2f} GFLOP{extra}" if fl else f"- {m}: unknown{extra}")
    lines += ["", "## PyTorch, every mode", "", "| model | batch | mode | median ms | p99 ms | items/s | compile s | note |",
              "|---|---:|---|---:|---:|---:|---:|---|"]
    order = {m: i for i, m in enumerate(MODELS)}
    for t in sorted(d["torch"], key=lambda t: (order.get(t["model"], 99), t["batch"], t["mode"])):
        if t.get("ok"):
            lines.append(f"| {t['model']} | {t['batch']} | {t['mode']} | {t['median_ms']:.3f} | {t['p99_ms']:.3f} | "
                         f"{t['items_per_s']:,.0f} | {fmt(t.get('compile_s'), '.0f')} | |")
        else:
            lines.append(f"| {t['model']} | {t['batch']} | {t['mode']} | — | — | — | {fmt(t.get('compile_s'), '.0f')} | "
                         f"{t.get('error', '').replace('|', '/')} |")
    lines += ["", "## Kiln, every case", "", "| model | batch | prec | build s | qps | GPU median ms | e2e median / p99 ms | h2d / d2h median ms | note |",
              "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for k in d["kiln"]:
        if k.get("ok"):
            lines.append(f"| {k['model']} | {k['batch']} | {k['precision']} | {fmt(k.get('build_s'), '.1f')} | "
                         f"{k['throughput_qps']:,.1f} | {k['gpu_compute_median_ms']:.3f} | {k['latency_median_ms']:.3f} / "
                         f"{fmt(k.get('latency_p99_ms'), '.3f')} | {fmt(k.get('h2d_median_ms'), '.3f')} / "
                         f"{fmt(k.get('d2h_median_ms'), '.3f')} | |")
        else:
            lines.append(f"| {k['model']} | {k['batch']} | {k['precision']} | {fmt(k.get('build_s'), '.1f')} | — | — | — | — | "
                         f"{k.get('error', '').replace('|', '/')} (log: {k.get('log', '')}) |")
    lines += ["", "## Commands", "", "```", d["command"]]
    lines += d["commands"]
    lines += ["```", ""]
    if d["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in d["notes"]] + [""]
    lines.append(f"Total wall time {d['elapsed_s']:.0f} s.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- environment


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return short(e)


def collect_env(res, torch, device, kiln_cmd):
    env = res.data["env"]
    env["python"] = sys.version.split()[0]
    q = sh("nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader")
    if q and "," in q:
        parts = [x.strip() for x in q.splitlines()[0].split(",")]
        env["driver"] = parts[1]
        env["sm_clock"] = f"{parts[2]} (max {parts[3]})"
        env["memory"] = parts[4]
        env["gpu"] = parts[0]
    if torch is not None:
        env["torch"] = torch.__version__
        env["cuda"] = str(torch.version.cuda)
        try:
            env["cudnn"] = str(torch.backends.cudnn.version())
        except Exception:  # noqa: BLE001
            pass
        if device == "cuda":
            env["gpu"] = torch.cuda.get_device_name()
            env["sms"] = torch.cuda.get_device_properties(0).multi_processor_count
    for mod in ("torchvision", "transformers", "onnx"):
        try:
            env[mod] = importlib.import_module(mod).__version__
        except Exception as e:  # noqa: BLE001
            env[mod] = f"missing ({short(e, 80)})"
    try:
        env["kiln"] = subprocess.run(kiln_cmd + ["--version"], capture_output=True, text=True, timeout=30).stdout.strip() or "?"
    except Exception as e:  # noqa: BLE001
        env["kiln"] = f"? ({short(e, 80)})"
    if "gpu" not in env:
        env["gpu"] = "cpu (dry run)" if res.args.dry_run else "unknown GPU"


# ----------------------------------------------------------------------------- PyTorch


class Torch:
    """PyTorch timing in this process: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, torch, device, args):
        self.t = torch
        self.device = device
        self.args = args

    def sync(self):
        if self.device == "cuda":
            self.t.cuda.synchronize()

    def free(self):
        import gc
        gc.collect()
        if self.device == "cuda":
            self.t.cuda.synchronize()
            self.t.cuda.empty_cache()

    def time(self, fn, iters, warmup):
        """Median, p99, min and mean ms of `fn()` over `iters` calls, each timed alone."""
        t = self.t
        for _ in range(warmup):
            fn()
        self.sync()
        ts = []
        if self.device == "cuda":
            for _ in range(iters):
                s = t.cuda.Event(enable_timing=True)
                e = t.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                e.synchronize()
                ts.append(s.elapsed_time(e))
        else:
            for _ in range(iters):
                s = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - s) * 1e3)
        ts.sort()
        return {"median_ms": statistics.median(ts), "p99_ms": ts[max(0, int(len(ts) * 0.99) - 1)],
                "min_ms": ts[0], "mean_ms": sum(ts) / len(ts)}

    def fp32_strict(self, strict=True):
        """TF32 off (true FP32) or on, for cuBLAS and cuDNN."""
        self.t.set_float32_matmul_precision("highest" if strict else "high")
        self.t.backends.cudnn.allow_tf32 = not strict

    def ceiling(self, res):
        """Dense square matmul throughput: fp16, fp32 (TF32 off) and tf32."""
        t = self.t
        n = 512 if self.args.dry_run else 8192
        iters = {"fp16": 50, "fp32": 12, "tf32": 30}
        if self.args.quick or self.args.dry_run:
            iters = {k: max(3, v // 2) for k, v in iters.items()} if not self.args.dry_run else {k: 3 for k in iters}
        cases = [("fp16", t.float16, True, "FP16 tensor cores"), ("fp32", t.float32, True, "FP32, TF32 off"),
                 ("tf32", t.float32, False, "FP32 inputs, TF32 tensor cores")]
        for name, dtype, strict, what in cases:
            s = time.time()
            try:
                self.fp32_strict(strict)
                g = t.Generator(device=self.device).manual_seed(0)
                a = t.randn(n, n, device=self.device, dtype=dtype, generator=g)
                b = t.randn(n, n, device=self.device, dtype=dtype, generator=g)
                c = t.empty(n, n, device=self.device, dtype=dtype)
                with t.inference_mode():
                    st = self.time(lambda: t.matmul(a, b, out=c), iters[name], warmup=max(2, iters[name] // 5))
                tflops = 2 * n ** 3 / (st["median_ms"] * 1e-3) / 1e12
                res.data["ceiling"][name] = {"what": what, "n": n, "iters": iters[name], "tflops": tflops, **st}
                log(f"ceiling {name} ({what}): {n}³ in {st['median_ms']:.3f} ms median → {tflops:.1f} TFLOP/s "
                    f"({time.time() - s:.1f} s)")
                a = b = c = None  # (closed over by the lambda: dropped, not deleted)
            except Exception as e:  # noqa: BLE001
                res.data["ceiling"][name] = {"what": what, "n": n, "error": short(e)}
                res.note(f"ceiling {name}: {short(e)}")
            self.free()
        self.fp32_strict(True)

    def inputs(self, model, batch, dtype, channels_last):
        t = self.t
        spec = MODELS[model]
        g = t.Generator(device="cpu").manual_seed(0)
        if spec["kind"] == "image":
            x = t.randn(batch, *spec["dims"], generator=g).to(self.device, dtype)
            if channels_last:
                x = x.contiguous(memory_format=t.channels_last)
            return (x,)
        seq = spec["dims"][0]
        ids = t.randint(0, 30000, (batch, seq), generator=g).to(self.device)
        mask = t.ones(batch, seq, dtype=t.int64, device=self.device)
        types_ = t.zeros(batch, seq, dtype=t.int64, device=self.device)
        return (ids, mask, types_)

    def prepare(self, master, model, prec, batch, channels_last):
        t = self.t
        dtype = t.float16 if prec == "fp16" else t.float32
        m = copy.deepcopy(master).to(self.device, dtype).eval()
        if channels_last:
            m = m.to(memory_format=t.channels_last)
        return m, self.inputs(model, batch, dtype, channels_last)

    def flops(self, master, model):
        """FLOPs of one item (batch 1) by FlopCounterMode, on the device (fp16 on the GPU,
        so that attention dispatches as it does when timed)."""
        from torch.utils.flop_counter import FlopCounterMode
        prec = "fp16" if self.device == "cuda" else "fp32"
        m, x = self.prepare(master, model, prec, 1, False)
        with self.t.inference_mode(), FlopCounterMode(display=False) as fc:
            m(*x)
        total = fc.get_total_flops()
        del m, x
        self.free()
        return total

    def run_mode(self, master, model, mode, batch, res):
        """Times one PyTorch mode; returns the entry appended to res.data['torch']."""
        t = self.t
        prec = "fp16" if "16" in mode else "fp32"
        cl = mode.endswith("cl") or (mode.startswith("compile") and MODELS[model]["kind"] == "image")
        entry = {"model": model, "batch": batch, "precision": prec, "mode": mode, "ok": False, "channels_last": cl}
        s = time.time()
        m = call = x = None
        try:
            self.fp32_strict(True)
            m, x = self.prepare(master, model, prec, batch, cl)
            with t.inference_mode():
                call = m
                if mode.startswith("compile"):
                    t._dynamo.reset()
                    call = t.compile(m, mode="reduce-overhead", dynamic=False)
                    for _ in range(3):
                        call(*x)
                    self.sync()
                    entry["compile_s"] = round(time.time() - s, 1)
                st = self.time(lambda: call(*x), self.args.iters, self.args.torch_warmup)
            entry.update(st)
            entry["items_per_s"] = batch * 1e3 / st["median_ms"]
            entry["ok"] = True
            log(f"torch {model} b{batch} {mode}: {st['median_ms']:.3f} ms median, {entry['items_per_s']:,.0f} items/s"
                + (f", compiled in {entry['compile_s']:.0f} s" if "compile_s" in entry else "") + f" ({time.time() - s:.1f} s)")
        except Exception as e:  # noqa: BLE001
            entry["error"] = short(e)
            entry.setdefault("compile_s", round(time.time() - s, 1) if mode.startswith("compile") else None)
            log(f"torch {model} b{batch} {mode}: FAILED {entry['error']}")
            traceback.print_exc(file=sys.stdout)
        finally:
            m = call = x = None
            if mode.startswith("compile"):
                try:
                    t._dynamo.reset()
                except Exception:  # noqa: BLE001
                    pass
            self.free()
        entry["wall_s"] = round(time.time() - s, 1)
        res.data["torch"].append(entry)
        return entry


# ----------------------------------------------------------------------------- models


def load_exporter():
    """The repository's exporter (python/export_torch_models.py), weights kept."""
    sys.path.insert(0, os.path.join(REPO, "python"))
    ex = importlib.import_module("export_torch_models")
    ex.KEEP_WEIGHTS = True
    return ex


def make_master(model, args, res):
    """The PyTorch module (CPU, fp32, eval) for `model`, or raises with the reason."""
    import torch
    torch.manual_seed(0)
    if model in ("resnet50", "mobilenetv2"):
        import torchvision
        ex = load_exporter()
        make = torchvision.models.resnet50 if model == "resnet50" else torchvision.models.mobilenet_v2
        m = make(weights=None)
        ex.calibrate_batchnorm(m, lambda: torch.randn(8, 3, 224, 224))
        return m.eval()
    if model == "bert":
        import transformers
        ex = load_exporter()
        return ex.Bert(transformers.BertModel(transformers.BertConfig(), add_pooling_layer=True)).eval()
    if model == "yolov8n":
        DetectionModel = import_ultralytics(args, res)
        return DetectionModel("yolov8n.yaml", nc=18, verbose=False).fuse(verbose=False).eval()
    raise ValueError(model)


def export_onnx(model, master, workdir):
    """Exports `master` with the repository's exporter, batch dynamic; returns the path."""
    import torch
    ex = load_exporter()
    path = os.path.join(workdir, f"{model}.onnx")
    if os.path.exists(path):
        return path
    if model == "bert":
        seq = MODELS["bert"]["dims"][0]
        args = (torch.randint(0, 30000, (1, seq)), torch.ones(1, seq, dtype=torch.int64), torch.zeros(1, seq, dtype=torch.int64))
        names = ["input_ids", "attention_mask", "token_type_ids"]
    else:
        args = (torch.randn(1, *MODELS[model]["dims"]),)
        names = ["input"]
    tmp = os.path.join(workdir, "tmp-" + model)
    os.makedirs(tmp, exist_ok=True)
    ex.export(master, args, model, tmp, names, dynamic_axes={n: {0: "batch"} for n in names})
    for f in os.listdir(tmp):
        os.replace(os.path.join(tmp, f), os.path.join(workdir, f))
    shutil.rmtree(tmp, ignore_errors=True)
    return path


def import_ultralytics(args, res):
    """Installs the carried ultralytics wheels into args.site (once) and returns
    DetectionModel; raises with the reason."""
    site = args.site
    if not os.path.isdir(os.path.join(site, "ultralytics")):
        wheels = sorted(glob.glob(os.path.join(args.wheels, "*.whl")))
        if not wheels:
            raise FileNotFoundError(f"no wheels in {args.wheels} (run bench/stage.sh {args.wheels} before the device run)")
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", site, *wheels]
        res.data["commands"].append(" ".join(shlex.quote(c) for c in cmd))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"pip install failed ({p.returncode}): {(p.stderr or p.stdout)[-300:]}")
    if site not in sys.path:
        sys.path.insert(0, site)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    for mod in ("polars", "ultralytics_platform"):  # optional, not needed for inference
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001
            sys.modules[mod] = types.ModuleType(mod)
    stubbed = []
    for _ in range(8):
        try:
            import ultralytics
            from ultralytics.nn.tasks import DetectionModel
            break
        except ModuleNotFoundError as e:
            # A module ultralytics imports but building and running the model does not use
            # (cv2 where OpenCV is missing...): stubbed, noted, tried again. Never torch/numpy.
            name = e.name or ""
            if not name or name.split(".")[0] in ("torch", "numpy", "ultralytics", "thop", "yaml") or name in stubbed:
                raise
            from unittest import mock
            for mod in [k for k in sys.modules if k == "ultralytics" or k.startswith("ultralytics.")]:
                del sys.modules[mod]
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                sys.modules.setdefault(".".join(parts[:i]), mock.MagicMock(name=".".join(parts[:i])))
            stubbed.append(name)
    else:
        raise RuntimeError(f"ultralytics still fails to import after stubbing {stubbed}")
    if stubbed:
        res.note(f"ultralytics imported with stand-ins for missing modules {stubbed} (not used to build or run the model)")
    res.data["env"]["ultralytics"] = ultralytics.__version__
    return DetectionModel


def onnx_inputs(path):
    """[(name, elem_type, dims)] of the graph inputs that are not initializers."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    out = []
    for i in m.graph.input:
        if i.name in init:
            continue
        tt = i.type.tensor_type
        out.append((i.name, tt.elem_type, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]))
    return out


def kiln_shapes(model, inputs, batch):
    """`--shapes` entries, one per input (NAME:DxD...): the batch, then the model's per-item
    dims (or, for an unexpected rank, the ONNX model's own static dims)."""
    item = MODELS[model]["dims"]
    shapes = []
    for name, _, dims in inputs:
        full = [batch, *item]
        if len(dims) != len(full):  # not the expected rank: the ONNX dims, batch first
            full = [batch] + [d if isinstance(d, int) and d > 0 else 1 for d in dims[1:]]
        shapes.append(f"{name}:{'x'.join(str(d) for d in full)}")
    return shapes


# ----------------------------------------------------------------------------- Kiln


def kiln_command(spec, workdir):
    """The kiln command as a word list; a .tar.xz bundle is unpacked first."""
    if spec.endswith((".tar.xz", ".tar.gz", ".tar")) and os.path.isfile(spec):
        dest = os.path.join(workdir, "bin")
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(spec) as tf:
            member = next(m for m in tf.getmembers() if os.path.basename(m.name) == "kiln" and m.isfile())
            member.name = "kiln"
            try:
                tf.extract(member, dest, filter="data")
            except TypeError:  # Python without extraction filters
                tf.extract(member, dest)
        path = os.path.join(dest, "kiln")
        os.chmod(path, 0o755)
        return [path]
    words = shlex.split(spec)
    if len(words) == 1 and os.path.exists(words[0]):
        words[0] = os.path.abspath(words[0])
    return words


def run_logged(cmd, logpath, timeout):
    """Runs cmd, appending its command line, stdout and stderr to logpath; returns
    (returncode or None on timeout, seconds, tail of the output)."""
    s = time.time()
    with open(logpath, "a") as f:
        f.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        try:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = None
            f.write(f"\n[timed out after {timeout:.0f} s]\n")
        except OSError as e:
            rc = -1
            f.write(f"\n[could not start: {e}]\n")
        f.write(f"[exit {rc}, {time.time() - s:.1f} s]\n\n")
    with open(logpath, errors="replace") as f:
        tail = f.read()[-2000:]
    return rc, time.time() - s, tail


def last_error_line(tail):
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.startswith(("$ ", "[exit"))]
    for ln in reversed(lines):
        if re.search(r"error|fail|panick|not supported|unsupported|timed out|could not", ln, re.I):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def stats(d, key):
    v = d.get(key) or {}
    return v.get("median") if isinstance(v, dict) else None


def kiln_case(args, res, kiln, model, onnx_path, shapes, prec, batch, deadline):
    entry = {"model": model, "batch": batch, "precision": prec, "ok": False}
    res.data["kiln"].append(entry)
    logdir = os.path.join(args.out, "logs")
    os.makedirs(logdir, exist_ok=True)
    tag = f"{model}-{prec}-b{batch}"
    logpath = os.path.join(logdir, f"kiln-{tag}.log")
    entry["log"] = os.path.relpath(logpath, args.out)
    plan = os.path.join(args.workdir, f"{tag}.kiln")
    jpath = os.path.join(args.workdir, f"{tag}.json")
    for f in (plan, jpath):
        if os.path.exists(f):
            os.remove(f)
    build = kiln + ["build", onnx_path, "-o", plan, "--backend", "cuda"] + (["--fp16"] if prec == "fp16" else [])
    build += ["--shapes", ",".join(shapes)]  # NAME:DxD[,NAME:DxD...]: one flag, trtexec's syntax
    bench = kiln + ["bench", plan, "--json", jpath, "--warmup", str(args.kiln_warmup), "--duration", str(args.kiln_duration)]
    res.data["commands"] += [" ".join(shlex.quote(c) for c in build), " ".join(shlex.quote(c) for c in bench)]
    left = deadline - time.time()
    if left < 15:
        entry["error"] = "skipped: out of time budget"
        log(f"kiln {tag}: skipped (time budget)")
        return entry
    rc, secs, tail = run_logged(build, logpath, timeout=max(10, min(300, left - 10)))
    entry["build_s"] = round(secs, 1)
    if rc != 0 or not os.path.exists(plan):
        entry["error"] = f"build {'timed out' if rc is None else f'exit {rc}'}: {last_error_line(tail)}"
        log(f"kiln {tag}: build FAILED ({secs:.1f} s): {entry['error']}")
        return entry
    left = deadline - time.time()
    rc, secs, tail = run_logged(bench, logpath, timeout=max(10, min(args.kiln_duration + 120, left - 5)))
    entry["bench_s"] = round(secs, 1)
    try:
        with open(jpath) as f:
            j = json.load(f)
    except Exception as e:  # noqa: BLE001
        j = None
        err = short(e, 120)
    if rc != 0 or not isinstance(j, dict):
        entry["error"] = f"bench {'timed out' if rc is None else f'exit {rc}'}: {last_error_line(tail)}" + ("" if j else f" (json: {err})")
        log(f"kiln {tag}: bench FAILED: {entry['error']}")
        return entry
    entry["raw"] = j
    if j.get("backend") is not None and "cuda" not in str(j["backend"]).lower():
        res.note(f"kiln {tag}: bench ran on backend {j['backend']!r}, not CUDA")
    for w in j.get("warnings") or []:
        res.note(f"kiln {tag}: {w}")
    try:
        qps = float(j["throughput_qps"])
        entry["throughput_qps"] = qps
        entry["reported_batch"] = j.get("batch")
        if j.get("batch") not in (None, batch):
            res.note(f"kiln {tag}: bench JSON says batch {j.get('batch')}, asked for {batch}")
        entry["items_per_s"] = qps * batch
        entry["gpu_compute_median_ms"] = float(stats(j, "gpu_compute_ms"))
        entry["latency_median_ms"] = float(stats(j, "latency_ms"))
        entry["latency_p99_ms"] = (j.get("latency_ms") or {}).get("p99")
        entry["h2d_median_ms"] = stats(j, "h2d_ms")
        entry["d2h_median_ms"] = stats(j, "d2h_ms")
        entry["enqueue_median_ms"] = stats(j, "enqueue_ms")
        entry["ok"] = True
    except Exception as e:  # noqa: BLE001
        entry["error"] = f"bench JSON not as expected: {short(e, 200)}"
        log(f"kiln {tag}: {entry['error']}")
        return entry
    log(f"kiln {tag}: built in {entry['build_s']:.1f} s; GPU {entry['gpu_compute_median_ms']:.3f} ms, "
        f"e2e {entry['latency_median_ms']:.3f} ms median, {entry['items_per_s']:,.0f} items/s")
    return entry


# ----------------------------------------------------------------------------- main


def load_torch(args, res):
    """(torch, "cuda" or "cpu"), or (None, "cpu") with a note: PyTorch is optional in a dry
    run, and on the device its absence is a note, not a crash."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        res.note(f"PyTorch unavailable ({short(e, 120)}): no PyTorch columns, no ceiling, no FLOPs, no exports")
        return None, "cpu"
    if torch.cuda.is_available() and not args.dry_run:
        torch.backends.cudnn.benchmark = True
        return torch, "cuda"
    if not args.dry_run:
        res.note("PyTorch sees no CUDA GPU: PyTorch timed on the CPU")
    return torch, "cpu"


def main(argv=None):
    global T0
    T0 = time.time()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    deadline = T0 + args.budget
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    if args.workdir is None:
        args.workdir = os.path.join(tempfile.gettempdir(), "kiln-bench-work")
    os.makedirs(args.workdir, exist_ok=True)
    os.environ.setdefault("KILN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "kiln-kernel-cache"))
    res = Results(args, [os.path.relpath(__file__) if os.path.isabs(__file__) else __file__, *argv])

    torch, device = load_torch(args, res)
    tt = Torch(torch, device, args) if torch is not None else None
    try:
        kiln = kiln_command(args.kiln, args.workdir)
    except Exception as e:  # noqa: BLE001
        kiln = shlex.split(args.kiln)
        res.note(f"--kiln {args.kiln}: {short(e)}")
    collect_env(res, torch, device, kiln)
    res.set_gpu(res.data["env"]["gpu"])
    res.save()
    log(f"GPU {res.data['env']['gpu']}, driver {res.data['env'].get('driver', '?')}, torch {res.data['env'].get('torch', '-')}, "
        f"kiln {res.data['env'].get('kiln')}; results → {res.base}.md/.json; budget {args.budget:.0f} s")

    # 1. The ceiling.
    if tt is not None:
        tt.ceiling(res)
        res.save()

    # 2. Per model: PyTorch module, FLOPs, ONNX; Kiln cases; PyTorch eager modes.
    compile_queue = []
    masters = {}

    def bench_model(model):
        s = time.time()
        info = res.data["models"].setdefault(model, {})
        master = None
        if tt is not None:
            try:
                master = make_master(model, args, res)
                info["params"] = sum(p.numel() for p in master.parameters())
            except Exception as e:  # noqa: BLE001
                info["torch_error"] = short(e)
                res.note(f"{model}: no PyTorch model: {short(e)}")
                traceback.print_exc(file=sys.stdout)
        if master is not None:
            try:
                info["flops_per_item"] = tt.flops(master, model)
                log(f"{model}: {info['flops_per_item'] / 1e9:.2f} GFLOP per item")
            except Exception as e:  # noqa: BLE001
                info["flops_error"] = short(e)
                res.note(f"{model}: FLOPs not counted: {short(e)}")
        # The ONNX model for Kiln.
        onnx_path = None
        try:
            if model == "yolov8n":
                onnx_path = os.path.abspath(os.path.join(args.assets, "320n.onnx"))
                if not os.path.exists(onnx_path):
                    raise FileNotFoundError(f"{onnx_path} missing (nudenet's 320n.onnx; scripts/gpu-check puts it in .gpu-bundle/assets)")
            elif master is None:
                raise RuntimeError("no PyTorch model to export")
            else:
                onnx_path = export_onnx(model, master, args.workdir)
            info["onnx"] = onnx_path
            info["onnx_inputs"] = onnx_inputs(onnx_path)
        except Exception as e:  # noqa: BLE001
            info["onnx_error"] = short(e)
            res.note(f"{model}: no ONNX model for Kiln: {short(e)}")
            onnx_path = None
        log(f"{model}: prepared in {time.time() - s:.1f} s" + (f" ({onnx_path})" if onnx_path else ""))
        res.save()

        for prec in args.precisions:
            for batch in args.batches:
                if onnx_path:
                    if tt is not None:
                        tt.free()
                    kiln_case(args, res, kiln, model, onnx_path, kiln_shapes(model, info["onnx_inputs"], batch), prec, batch, deadline)
                else:
                    res.data["kiln"].append({"model": model, "batch": batch, "precision": prec, "ok": False,
                                             "error": info.get("onnx_error", "no ONNX model")})
                res.save()
                for mode in TORCH_MODES[prec]:
                    if mode.endswith("cl") and MODELS[model]["kind"] != "image":
                        continue
                    if master is None:
                        why = info.get("torch_error", "PyTorch unavailable")
                        res.data["torch"].append({"model": model, "batch": batch, "precision": prec, "mode": mode,
                                                  "ok": False, "error": f"n/a: {why}"})
                        continue
                    if mode.startswith("compile"):
                        if args.no_compile or (args.dry_run and not args.compile):
                            continue
                        compile_queue.append((model, mode, batch))
                        continue
                    if deadline - time.time() < 20:
                        res.data["torch"].append({"model": model, "batch": batch, "precision": prec, "mode": mode,
                                                  "ok": False, "error": "skipped: out of time budget"})
                        continue
                    tt.run_mode(master, model, mode, batch, res)
                    res.save()
        masters[model] = master

    for model in args.models:
        try:
            bench_model(model)
        except Exception as e:  # noqa: BLE001 (one model's surprise must not end the suite)
            res.note(f"{model}: stopped by an unexpected error: {short(e)}")
            traceback.print_exc(file=sys.stdout)
            res.save()

    # 3. torch.compile last, as far as the budget goes (tens of seconds each).
    # Batch 1 first: there eager PyTorch is bound by launches and CUDA graphs matter most.
    order = {m: i for i, m in enumerate(MODELS)}
    compile_queue.sort(key=lambda c: (c[2], order[c[0]]))
    seen = {}  # model -> wall seconds of its last compile case
    for model, mode, batch in compile_queue:
        if masters.get(model) is None:
            continue
        # This model's own compile time when known (batch 64 after batch 1), else the slowest yet.
        est = 1.2 * seen[model] if model in seen else (1.2 * max(seen.values()) if seen else COMPILE_ESTIMATE_S)
        left = deadline - time.time()
        if left < est + 10:
            res.data["torch"].append({"model": model, "batch": batch, "precision": "fp16", "mode": mode, "ok": False,
                                      "error": f"skipped: {left:.0f} s of the time budget left, a compile takes ~{est:.0f} s"})
            log(f"torch {model} b{batch} {mode}: skipped (time budget: {left:.0f} s left, ~{est:.0f} s needed)")
            res.save()
            continue
        e = tt.run_mode(masters[model], model, mode, batch, res)
        seen[model] = e.get("wall_s") or COMPILE_ESTIMATE_S
        res.save()
    skipped = [f"{t['model']} b{t['batch']} {t['mode']}" for t in res.data["torch"] if "time budget" in str(t.get("error", ""))]
    skipped += [f"kiln {k['model']} {k['precision']} b{k['batch']}" for k in res.data["kiln"] if "time budget" in str(k.get("error", ""))]
    if skipped:
        res.note(f"skipped for the {args.budget:.0f} s time budget: {', '.join(skipped)} (raise --budget, or use --models)")
    if args.dry_run:
        res.note("dry run: fake or CPU numbers, not a benchmark")

    res.data["complete"] = True
    res.save()
    print()
    print(f"Kiln vs PyTorch on {res.data['env']['gpu']} (driver {res.data['env'].get('driver', '?')}, "
          f"torch {res.data['env'].get('torch', '-')})", flush=True)
    c = res.data["ceiling"]
    if c:
        print("matrix-unit ceiling: " + ", ".join(f"{k} {v['tflops']:.1f} TFLOP/s" for k, v in c.items() if v.get("tflops")))
    print(text_table(res.data["rows"]))
    failures = {}  # message -> cases, so that one cause is printed once
    for k in res.data["kiln"]:
        if not k.get("ok"):
            failures.setdefault("kiln: " + k.get("error", "failed"), []).append(f"{k['model']} {k['precision']} b{k['batch']}")
    for t in res.data["torch"]:
        if not t.get("ok"):
            failures.setdefault("PyTorch: " + t.get("error", "failed"), []).append(f"{t['model']} b{t['batch']} {t['mode']}")
    for msg, cases in failures.items():
        print(f"  {msg}\n      ({', '.join(cases)})")
    print(f"\nwrote {res.base}.md and {res.base}.json (logs in {os.path.join(args.out, 'logs')}); "
          f"total {time.time() - T0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
