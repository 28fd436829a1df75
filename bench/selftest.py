#!/usr/bin/env python3
"""Tests bench/run.py's orchestration without a GPU or PyTorch: the fake kiln
(bench/fake_kiln.py) for Kiln, and a stand-in for run.py's PyTorch layer (ceiling, FLOPs,
timed modes, torch.compile) with made-up numbers. Needs onnx (the repo's .venv has it).

    .venv/bin/python bench/selftest.py            # prints the table, checks the results

The real PyTorch code paths run only on the device (or with `run.py --dry-run` where
PyTorch is installed).
"""
import json
import os
import shutil
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402

FLOPS = {"resnet50": 8.2e9, "mobilenetv2": 0.6e9, "bert": 22.4e9, "yolov8n": 3.4e9}


def fake_torch_module():
    ns = types.SimpleNamespace
    return ns(__version__="2.11.0-fake", version=ns(cuda="13.0"),
              backends=ns(cudnn=ns(version=lambda: 91000)),
              cuda=ns(get_device_name=lambda: "NVIDIA H100 80GB HBM3",
                      get_device_properties=lambda i: ns(multi_processor_count=132)))


class FakeTorch:
    """run.Torch's interface, made-up numbers; `fail` maps (model, mode) to an error."""

    fail = {("bert", "compile16"): "BackendCompilerFailed: fake"}

    def __init__(self, torch, device, args):
        self.args = args

    def free(self):
        pass

    def ceiling(self, res):
        for name, tf in (("fp16", 700.0), ("fp32", 50.0), ("tf32", 350.0)):
            res.data["ceiling"][name] = {"what": name, "n": 8192, "iters": 3, "tflops": tf,
                                         "median_ms": 2 * 8192 ** 3 / tf / 1e9, "p99_ms": 0, "min_ms": 0, "mean_ms": 0}

    def flops(self, master, model):
        return FLOPS[model]

    def run_mode(self, master, model, mode, batch, res):
        prec = "fp16" if "16" in mode else "fp32"
        e = {"model": model, "batch": batch, "precision": prec, "mode": mode, "ok": False, "wall_s": 0.1}
        if (model, mode) in self.fail:
            e["error"] = self.fail[(model, mode)]
        else:
            ms = 0.5 + batch * (0.01 if prec == "fp16" else 0.03) * (0.8 if "compile" in mode else 1.0)
            e.update(ok=True, median_ms=ms, p99_ms=ms * 1.1, min_ms=ms, mean_ms=ms, items_per_s=batch * 1e3 / ms)
            if "compile" in mode:
                e["compile_s"] = 0.1
        res.data["torch"].append(e)
        return e


class FakeModule:
    def parameters(self):
        return []


def tiny_onnx(model, path):
    """An Identity graph with the real model's input names, types and dims."""
    import onnx
    from onnx import TensorProto, helper
    if model == "bert":
        ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", 128])
               for n in ("input_ids", "attention_mask", "token_type_ids")]
    else:
        ins = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])]
    outs = [helper.make_tensor_value_info(f"out{i}", t.type.tensor_type.elem_type, None) for i, t in enumerate(ins)]
    nodes = [helper.make_node("Identity", [t.name], [f"out{i}"]) for i, t in enumerate(ins)]
    onnx.save(helper.make_model(helper.make_graph(nodes, model, ins, outs)), path)


def main():
    tmp = tempfile.mkdtemp(prefix="kiln-bench-selftest-")
    try:
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets)
        nudenet = os.path.join(run.REPO, ".venv/lib/python3.11/site-packages/nudenet/320n.onnx")
        if os.path.exists(nudenet):
            shutil.copy(nudenet, assets)
        else:
            tiny_onnx("yolov8n", os.path.join(assets, "320n.onnx"))

        run.load_torch = lambda args, res: (fake_torch_module(), "cuda")
        run.Torch = FakeTorch
        run.make_master = lambda model, args, res: FakeModule()

        def export(model, master, workdir):
            path = os.path.join(workdir, f"{model}.onnx")
            tiny_onnx(model, path)
            return path
        run.export_onnx = export
        os.environ["FAKE_KILN_FAIL"] = "mobilenetv2-fp16-b64"
        os.environ["FAKE_KILN_BAD_JSON"] = "resnet50-fp32-b1"
        kiln = f"{sys.executable} {os.path.join(HERE, 'fake_kiln.py')}"
        out = os.path.join(tmp, "out")
        common = ["--kiln", kiln, "--assets", assets, "--wheels", os.path.join(tmp, "wheels"), "--out", out,
                  "--workdir", os.path.join(tmp, "work")]

        # 1. Everything fits in the budget.
        assert run.main(common + ["--quick"]) == 0
        base = os.path.join(out, f"{run.Results(run.parse_args(common), []).data['date']}-nvidia-h100-80gb-hbm3")
        with open(base + ".json") as f:
            d = json.load(f)
        rows = {(r["model"], r["batch"], r["precision"]): r for r in d["rows"]}
        assert len(rows) == 16, len(rows)
        assert d["complete"]
        r = rows[("resnet50", 64, "fp16")]
        assert r["torch_mode"] == "compile16", r
        assert abs(r["ratio"] - r["kiln_items_s"] / r["torch_items_s"]) < 1e-9
        assert abs(r["pct_ceiling"] - 100 * FLOPS["resnet50"] * r["kiln_items_s"] / 1e12 / 700.0) < 1e-9
        assert abs(rows[("resnet50", 64, "fp32")]["pct_ceiling"]
                   - 100 * FLOPS["resnet50"] * rows[("resnet50", 64, "fp32")]["kiln_items_s"] / 1e12 / 50.0) < 1e-9
        assert "exit 1" in rows[("mobilenetv2", 64, "fp16")]["kiln_error"]
        assert "fake failure" in rows[("mobilenetv2", 64, "fp16")]["kiln_error"]
        assert "bench JSON not as expected" in rows[("resnet50", 1, "fp32")]["kiln_error"]
        assert "throughput_qps" in rows[("resnet50", 1, "fp32")]["kiln_error"]
        assert rows[("bert", 1, "fp16")]["torch_mode"] == "eager16"  # compile16 failed
        assert any("BackendCompilerFailed" in e for e in rows[("bert", 1, "fp16")]["torch_errors"])
        assert not any(t["mode"].endswith("cl") for t in d["torch"] if t["model"] == "bert")
        shapes = [c for c in d["commands"] if " build " in c and "bert.onnx" in c][0]
        assert "--shapes input_ids:1x128,attention_mask:1x128,token_type_ids:1x128" in shapes, shapes
        assert any("images:64x3x320x320" in c for c in d["commands"])
        assert any("--duration 1" in c for c in d["commands"])
        md = open(base + ".md").read()
        assert "| resnet50 | 64 | fp16 |" in md and "Incomplete" not in md
        assert os.path.exists(os.path.join(out, "logs", "kiln-mobilenetv2-fp16-b64.log"))

        # 2. A budget too short for torch.compile: skipped and noted, Kiln rows still there.
        assert run.main(common + ["--budget", "40", "--models", "resnet50,bert", "--batches", "1", "--tag", "short"]) == 0
        with open(base + "-short.json") as f:
            d = json.load(f)
        comp = [t for t in d["torch"] if t["mode"] == "compile16"]
        assert comp and all("time budget" in t["error"] for t in comp), comp
        assert any("skipped for the 40 s time budget" in n for n in d["notes"])
        assert len(d["rows"]) == 4 and all(r.get("kiln_items_s") or r.get("kiln_error") for r in d["rows"])
        assert "--duration 3" in " ".join(d["commands"])
        # 3. No ultralytics (its PyTorch cells n/a, no FLOPs), and a kiln that does not start.
        def master(model, args, res):
            if model == "yolov8n":
                raise FileNotFoundError("no wheels in X")
            return FakeModule()
        run.make_master = master
        assert run.main(common + ["--models", "yolov8n", "--batches", "1", "--tag", "noyolo"]) == 0
        with open(base + "-noyolo.json") as f:
            d = json.load(f)
        assert all(t["error"].startswith("n/a: FileNotFoundError: no wheels") for t in d["torch"]), d["torch"]
        assert all(r.get("kiln_items_s") and "pct_ceiling" not in r for r in d["rows"]), d["rows"]
        bad = common[:]
        bad[1] = os.path.join(tmp, "no-such-kiln")
        assert run.main(bad + ["--models", "resnet50", "--batches", "1", "--tag", "nokiln"]) == 0
        with open(base + "-nokiln.json") as f:
            d = json.load(f)
        assert all("could not start" in r["kiln_error"] and r.get("torch_ms") for r in d["rows"]), d["rows"]
        print("\nselftest: ok")
        return 0
    finally:
        if not os.environ.get("SELFTEST_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)


if __name__ == "__main__":
    sys.exit(main())
