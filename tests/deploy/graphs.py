"""What an int8 graph quantized: the torch op behind each ONNX matmul, the OpenVINO ops that read 8-bit tensors."""

from __future__ import annotations

import re

from sta.deploy import quantize


def fx_targets(proto, ops=quantize.HEAVY_OPS) -> dict[str, str]:
    """The torch op each matmul / conv node of an exported graph came from."""
    targets = {}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        found = re.search(r"target=torch\.ops\.([\w.]+)", meta.get("pkg.torch.onnx.fx_node", ""))
        if node.op_type in ops:
            targets[node.name] = found.group(1) if found else ""
    return targets


def eight_bit_consumers(xml) -> dict[str, str]:
    """OpenVINO ops that read a FakeQuantize output (friendly name -> type), shape reads aside."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return {t.get_node().get_friendly_name(): t.get_node().get_type_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "FakeQuantize" for t in op.output(0).get_target_inputs()
            if t.get_node().get_type_name() != "ShapeOf"}
