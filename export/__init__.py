"""Stage 5 (export): ONNX model + scene.json for the static web viewer in site/."""
