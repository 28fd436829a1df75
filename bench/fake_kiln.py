#!/usr/bin/env python3
"""A stand-in for `kiln build` / `kiln bench` that tests bench/run.py without a GPU.

    fake_kiln.py build MODEL.onnx -o PLAN --backend cuda [--fp16] --shapes NAME:DxD...[,NAME:DxD...]
    fake_kiln.py bench PLAN --json FILE --warmup N --duration S

`build` checks that MODEL exists and, when onnx imports, that the --shapes names are
exactly the model's inputs; it writes PLAN. `bench` writes the bench JSON contract with
made-up numbers. FAKE_KILN_FAIL=SUBSTRING makes `build` fail for plans whose path
contains SUBSTRING; FAKE_KILN_BAD_JSON=SUBSTRING makes `bench` write a JSON without
`throughput_qps` for them.
"""
import argparse
import json
import os
import sys


def stats(base):
    return {"min": base * 0.9, "mean": base * 1.02, "median": base, "p90": base * 1.05, "p95": base * 1.07,
            "p99": base * 1.1, "max": base * 1.5}


def main():
    if sys.argv[1:] == ["--version"]:
        print("kiln 0.0.0-fake")
        return 0
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("model")
    b.add_argument("-o", required=True)
    b.add_argument("--backend", required=True)
    b.add_argument("--fp16", action="store_true")
    b.add_argument("--shapes", default="", help="NAME:DxD[,NAME:DxD...] (one flag, as kiln's clap Option<String>)")
    r = sub.add_parser("bench")
    r.add_argument("plan")
    r.add_argument("--json", required=True)
    r.add_argument("--warmup", type=int, required=True)
    r.add_argument("--duration", type=float, required=True)
    a = p.parse_args()
    if a.cmd == "build":
        fail = os.environ.get("FAKE_KILN_FAIL")
        if fail and fail in a.o:
            print(f"error: fake failure for {a.o}", file=sys.stderr)
            return 1
        if not os.path.exists(a.model):
            print(f"error: no such model {a.model}", file=sys.stderr)
            return 1
        if sys.argv.count("--shapes") > 1:
            print("error: the argument '--shapes <SHAPES>' cannot be used multiple times", file=sys.stderr)
            return 2
        shapes = {}
        for s in filter(None, a.shapes.split(",")):
            name, dims = s.rsplit(":", 1)
            shapes[name] = [int(d) for d in dims.split("x")]
        try:
            import onnx
            m = onnx.load(a.model, load_external_data=False)
            init = {i.name for i in m.graph.initializer}
            names = [i.name for i in m.graph.input if i.name not in init]
            if sorted(names) != sorted(shapes):
                print(f"error: --shapes {sorted(shapes)} but the model's inputs are {names}", file=sys.stderr)
                return 1
        except ImportError:
            pass
        batch = next(iter(shapes.values()))[0] if shapes else 1
        with open(a.o, "w") as f:
            json.dump({"model": a.model, "fp16": a.fp16, "shapes": shapes, "batch": batch}, f)
        print(f"built {a.o} ({'fp16' if a.fp16 else 'fp32'}) for {shapes}")
        return 0
    with open(a.plan) as f:
        plan = json.load(f)
    batch = plan["batch"]
    gpu = 0.2 + 0.02 * batch * (0.5 if plan["fp16"] else 1.0)
    out = {"backend": "cuda", "warnings": [], "batch": batch, "throughput_qps": 1000.0 / gpu, "latency_ms": stats(gpu + 0.05 * batch + 0.1),
           "gpu_compute_ms": stats(gpu), "h2d_ms": stats(0.03 * batch), "d2h_ms": stats(0.01),
           "enqueue_ms": stats(0.05)}
    print(f"bench {a.plan}: {out['throughput_qps']:.1f} qps")
    bad = os.environ.get("FAKE_KILN_BAD_JSON")
    if bad and bad in a.plan:
        del out["throughput_qps"]
    with open(a.json, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
