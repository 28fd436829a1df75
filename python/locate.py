#!/usr/bin/env python3
"""Print the absolute path of a test asset installed by python/requirements.txt.

    python/locate.py node-tests     # onnx/backend/test/data/node (ONNX node test cases)
    python/locate.py nudenet-320n   # nudenet/320n.onnx (YOLOv8n detector)
    python/locate.py ppocr-det      # rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
    python/locate.py ppocr-rec      # rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx
    python/locate.py digits         # models/digits/digits.onnx (bundled in this repo)
    python/locate.py --list         # every name and its path (or "missing")
    python/locate.py --check        # exit 1 unless every pip-installed asset exists

With KILN_ASSETS=DIR set (the GPU bundle), a pip-installed asset is DIR/<basename>
when that file exists there (the device machine has no .venv with the packages).

Packages are only located, never imported (importlib.util.find_spec on a
top-level package does not run its __init__), so nudenet's and rapidocr's
runtime dependencies (opencv, ...) are not needed.  Exit status 1 with a
message on stderr if the asset is missing.
"""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (top-level package or None for a repo path, path relative to it)
ASSETS = {
    "node-tests": ("onnx", "backend/test/data/node"),
    "nudenet-320n": ("nudenet", "320n.onnx"),
    "ppocr-det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
    "ppocr-rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx"),
    "digits": (None, "models/digits/digits.onnx"),
}


def package_dirs(package):
    """Directories of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.abspath(d) for d in spec.submodule_search_locations]


def locate(name):
    """Absolute path of asset `name`; raises LookupError if it is not there."""
    if name not in ASSETS:
        raise LookupError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    package, rel = ASSETS[name]
    carried = os.environ.get("KILN_ASSETS")
    if carried and package is not None and os.path.exists(os.path.join(carried, os.path.basename(rel))):
        return os.path.join(carried, os.path.basename(rel))
    bases = [REPO] if package is None else package_dirs(package)
    if not bases:
        raise LookupError(f"{name}: python package {package!r} is not installed "
                          f"(run scripts/setup-venv and use .venv/bin/python)")
    for base in bases:
        path = os.path.join(base, rel)
        if os.path.exists(path):
            return path
    raise LookupError(f"{name}: {rel} not found under {', '.join(bases)}")


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if len(argv) == 2 else 2
    if argv[1] in ("--list", "--check"):
        ok = True
        for name in ASSETS:
            try:
                path = locate(name)
            except LookupError:
                path = "missing"
                ok = ok and ASSETS[name][0] is None  # --check: installed assets only
            if argv[1] == "--list":
                print(f"{name}\t{path}")
        return 0 if ok or argv[1] == "--list" else 1
    try:
        print(locate(argv[1]))
    except LookupError as e:
        print(f"locate.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
