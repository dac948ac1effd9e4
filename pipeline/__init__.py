"""Staged pipeline: scene -> Instant-NGP teacher -> pseudo-views -> NeLF student -> ONNX + web viewer."""
