"""Student -> ONNX (BatchNorm folded, optionally onnxsim-simplified), checked against torch."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pipeline.io import atomic_write_bytes
from student.kinds import StudentModel

OUTPUTS = ["rgb", "rgba"]


class PoseToImage(nn.Module):
    """The exported graph: `pose` (4, 4) float32 -> `rgb` (1, 3, S, S) in [0, 1] and
    `rgba` (1, S, S, 4) in [0, 255], interleaved and opaque.

    `rgba` is what a canvas ImageData holds, so the viewer converts it to bytes with one
    typed-array copy (Uint8ClampedArray.set rounds and clamps) instead of a per-pixel
    JavaScript loop; the transpose costs the runtime next to nothing.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = self.model(pose[None])
        rgba = torch.cat([rgb * 255.0, torch.full_like(rgb[:, :1], 255.0)], dim=1).permute(0, 2, 3, 1)
        return rgb, rgba


def ort_session(model_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def to_onnx_bytes(model: StudentModel, opset: int) -> bytes:
    wrapped = PoseToImage(model.for_export()).eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(wrapped, (torch.eye(4),), buf, input_names=["pose"], output_names=OUTPUTS,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    return buf.getvalue()


def simplify(model_bytes: bytes) -> bytes:
    import onnxsim

    simplified, ok = onnxsim.simplify(onnx.load_from_string(model_bytes))
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified.SerializeToString()


def fp16_weights(model_bytes: bytes) -> bytes:
    """The same graph with its conv weights and biases stored as float16, each followed
    by a Cast back to float32: half the file, and every backend can run it (onnxruntime
    folds the Casts when it loads the model, so the arithmetic stays float32). Other
    constants (ray directions, sample depths) stay float32: their precision matters more
    than their size.
    """
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    weights = {i for n in graph.node if n.op_type in ("Conv", "ConvTranspose") for i in n.input[1:]}
    # onnxsim leaves the weights it folded (e.g. GELU's 0.5) as Constant nodes: make them initializers
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in weights]:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if value is not None:
            value.name = node.output[0]
            graph.initializer.append(value)
            graph.node.remove(node)
    casts = []
    for init in graph.initializer:
        if init.name not in weights or init.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__cast"))
        init.CopyFrom(half)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)  # the Casts first: nodes must stay topologically sorted
    onnx.checker.check_model(model)
    return model.SerializeToString()


def psnr_between(a_bytes: bytes, b_bytes: bytes, poses: list[np.ndarray]) -> float:
    """PSNR (dB) of model b's `rgb` against model a's over `poses` (inf if identical)."""
    sa, sb = ort_session(a_bytes), ort_session(b_bytes)
    mse = np.mean([np.mean((sa.run(["rgb"], {"pose": p.astype(np.float32)})[0].astype(np.float64)
                            - sb.run(["rgb"], {"pose": p.astype(np.float32)})[0]) ** 2) for p in poses])
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def compare_with_torch(model: StudentModel, model_bytes: bytes, poses: list[np.ndarray],
                       tolerance: float) -> tuple[float, float]:
    """(largest |onnx - torch| of an output colour, share of colour values off by more than
    `tolerance`) over `poses`, both outputs (`rgb`, and `rgba` / 255)."""
    sess = ort_session(model_bytes)
    worst, off, total = 0.0, 0, 0
    with torch.no_grad():
        for pose in poses:
            p = pose.astype(np.float32)
            ref = model(torch.from_numpy(p)[None]).numpy()
            out, rgba = sess.run(OUTPUTS, {"pose": p})
            for diff in (np.abs(out - ref), np.abs(rgba[0, ..., :3] / 255.0 - ref[0].transpose(1, 2, 0))):
                worst = max(worst, float(diff.max()))
                off += int((diff > tolerance).sum())
                total += diff.size
    return worst, off / max(total, 1)


def export_onnx(model: StudentModel, ecfg, poses: list[np.ndarray], out_dir: Path) -> tuple[bytes, dict]:
    """Export, simplify if configured, compare with torch on `poses`.

    A student that reads grid cells at the nearest cell (gridlf) can land in the
    neighbouring cell where float rounding in onnxruntime differs from torch's at a cell
    border, so the comparison counts the colour values off by more than
    `export.max_abs_diff` (`mismatch_fraction`) rather than trusting the single worst one.

    Both graphs are kept in `out_dir` (`model_raw.onnx`, `model.onnx`) so that the
    effect of onnxsim on runtime fusions can be compared (bench/viewer.py).
    """
    model = model.eval()
    raw = to_onnx_bytes(model, ecfg.opset)
    onnx.checker.check_model(onnx.load_from_string(raw))
    atomic_write_bytes(out_dir / "model_raw.onnx", raw)
    final = simplify(raw) if ecfg.simplify else raw
    atomic_write_bytes(out_dir / "model.onnx", final)
    worst, off = compare_with_torch(model, final, poses, ecfg.max_abs_diff)
    worst_raw, off_raw = compare_with_torch(model, raw, poses, ecfg.max_abs_diff)
    report = {
        "max_abs_diff": worst, "max_abs_diff_raw": worst_raw,
        "mismatch_fraction": off, "mismatch_fraction_raw": off_raw,
        "n_check_poses": len(poses),
        "opset": ecfg.opset,
        "nodes_raw": len(onnx.load_from_string(raw).graph.node),
        "nodes": len(onnx.load_from_string(final).graph.node),
    }
    return final, report
