"""Student -> ONNX (BatchNorm folded, optionally onnxsim-simplified), checked against torch."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pipeline.io import atomic_write_bytes
from student.model import NeLFStudent, fold_batchnorm


class PoseToImage(nn.Module):
    """The exported graph: `pose` (4, 4) float32 -> `rgb` (1, 3, S, S)."""

    def __init__(self, model: NeLFStudent):
        super().__init__()
        self.model = model

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        return self.model(pose[None])


def ort_session(model_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def to_onnx_bytes(model: NeLFStudent, opset: int) -> bytes:
    wrapped = PoseToImage(fold_batchnorm(copy.deepcopy(model).eval())).eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(wrapped, (torch.eye(4),), buf, input_names=["pose"], output_names=["rgb"],
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    return buf.getvalue()


def simplify(model_bytes: bytes) -> bytes:
    import onnxsim

    simplified, ok = onnxsim.simplify(onnx.load_from_string(model_bytes))
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified.SerializeToString()


def max_abs_diff(model: NeLFStudent, model_bytes: bytes, poses: list[np.ndarray]) -> float:
    sess = ort_session(model_bytes)
    worst = 0.0
    with torch.no_grad():
        for pose in poses:
            p = pose.astype(np.float32)
            ref = model(torch.from_numpy(p)[None]).numpy()
            out = sess.run(["rgb"], {"pose": p})[0]
            worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def export_onnx(model: NeLFStudent, ecfg, poses: list[np.ndarray], out_dir: Path) -> tuple[bytes, dict]:
    """Export, simplify if configured, compare with torch on `poses`.

    Both graphs are kept in `out_dir` (`model_raw.onnx`, `model.onnx`) so that the
    effect of onnxsim on runtime fusions can be compared (bench/viewer.py).
    """
    model = model.eval()
    raw = to_onnx_bytes(model, ecfg.opset)
    onnx.checker.check_model(onnx.load_from_string(raw))
    atomic_write_bytes(out_dir / "model_raw.onnx", raw)
    final = simplify(raw) if ecfg.simplify else raw
    atomic_write_bytes(out_dir / "model.onnx", final)
    report = {
        "max_abs_diff": max_abs_diff(model, final, poses),
        "max_abs_diff_raw": max_abs_diff(model, raw, poses),
        "n_check_poses": len(poses),
        "opset": ecfg.opset,
        "nodes_raw": len(onnx.load_from_string(raw).graph.node),
        "nodes": len(onnx.load_from_string(final).graph.node),
    }
    return final, report
