"""Exports the PyTorch models Kiln's optimiser is measured on, as graph-only fixtures.

Run where PyTorch, torchvision and transformers are installed (the device machine):

    python3 python/export_torch_models.py OUT_DIR
    python3 python/export_torch_models.py OUT_DIR --keep-weights   # full models (GPU checks)

Each model is exported with random weights (no download), then every floating-point
initializer larger than 1 KiB is moved to an external-data file `<name>.weights` that is
NOT kept: the `.onnx` left behind is the exporter's exact graph (a few hundred KB), and
`kiln_opt`'s tests regenerate random weights of the right shapes into a fresh
`.weights` file (see crates/kiln-opt/tests/support/fixture.rs). Integer initializers
(shape constants) stay inside the `.onnx`.
"""

import os
import sys

import onnx
import torch


def strip_weights(path, name):
    model = onnx.load(path)
    offset = 0
    for t in model.graph.initializer:
        floating = t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        if not floating or len(t.raw_data) <= 1024:
            continue
        length = len(t.raw_data)
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", f"{name}.weights"), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        offset += (length + 63) // 64 * 64
    onnx.save_model(model, path)
    print(f"{name}: {os.path.getsize(path)} bytes of graph, {len(model.graph.node)} nodes, {offset} bytes of weights")


KEEP_WEIGHTS = "--keep-weights" in sys.argv


def calibrate_batchnorm(model, make_batch, steps=4):
    """Sets every BatchNorm's running statistics to those of random batches, as training
    would: with torchvision's initial statistics (mean 0, var 1) activations shrink block
    after block (MobileNetV2's logits come out near 1e-9, below FP16's range), which is
    nothing like a trained model."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(make_batch())
    model.eval()


def export(model, args, name, out, input_names, dynamic_axes=None, dynamo=False):
    path = os.path.join(out, f"{name}.onnx")
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, args, path, opset_version=17, input_names=input_names,
                          dynamic_axes=dynamic_axes, dynamo=dynamo, do_constant_folding=True)
    if KEEP_WEIGHTS:
        print(f"{name}: {os.path.getsize(path)} bytes with weights")
    else:
        strip_weights(path, name)


class Bert(torch.nn.Module):
    """BertModel with positional inputs and plain tensor outputs, as the exporter wants."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state, out.pooler_output


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    import torchvision
    import transformers

    image = torch.randn(1, 3, 224, 224)
    if "bert" not in sys.argv[2:]:
        for name, make in (("resnet50", torchvision.models.resnet50), ("mobilenetv2", torchvision.models.mobilenet_v2)):
            model = make(weights=None)
            if KEEP_WEIGHTS:
                calibrate_batchnorm(model, lambda: torch.randn(8, 3, 224, 224))
            export(model, (image,), name, out, ["input"])

    bert = Bert(transformers.BertModel(transformers.BertConfig(), add_pooling_layer=True))
    ids = torch.randint(0, 30000, (1, 128))
    mask = torch.ones(1, 128, dtype=torch.int64)
    types = torch.zeros(1, 128, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    export(bert, (ids, mask, types), "bert-base", out, names)
    if KEEP_WEIGHTS:
        return
    dyn = {n: {0: "batch", 1: "seq"} for n in names}
    export(bert, (ids, mask, types), "bert-base-dynamic", out, names, dynamic_axes=dyn)
    try:
        export(bert, (ids, mask, types), "bert-base-dynamo", out, names, dynamo=True)
    except Exception as e:  # the dynamo exporter needs onnxscript; report, don't fail
        print(f"bert-base-dynamo: not exported: {e}")


if __name__ == "__main__":
    main()
