"""Helpers for testing the static viewer (`site/`) in headless Chromium.

- `serve(directory)`: a static HTTP server on 127.0.0.1 in a thread (context manager).
- `launch_chromium(playwright, webgpu=...)`: the system Chromium with test flags.
- `canvas_rgb(page)`: the viewer's canvas pixels; `canvas_vs_ort_psnr(page, model)`:
  PSNR of those pixels against onnxruntime-python's output for `viewer.pose()`.
- `ConsoleLog`: console errors and uncaught page errors of a page.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# WebGPU on the CPU: SwiftShader's Vulkan implementation behind Dawn.
WEBGPU_ARGS = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader"]


def require_or_skip(condition: bool, reason: str) -> None:
    """pytest.skip(reason) unless `condition`; under CI (env CI=true) fail instead."""
    import pytest

    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)")
    pytest.skip(reason)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


# .mjs must be served as JavaScript for module imports; .wasm as application/wasm
# for streaming compilation.
_QuietHandler.extensions_map = {
    **http.server.SimpleHTTPRequestHandler.extensions_map,
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
}


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 at a free port; yields the base URL ('http://127.0.0.1:PORT/')."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def launch_chromium(playwright, webgpu: bool = False):
    """The system Chromium, headless, with the test flags (and WebGPU on SwiftShader if asked)."""
    args = CHROMIUM_ARGS + (WEBGPU_ARGS if webgpu else [])
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)


class ConsoleLog:
    """Collects console messages of type 'error' and uncaught exceptions of a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        self.messages: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg) -> None:
        self.messages.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            self.errors.append(msg.text)


def wait_state(page, states: tuple[str, ...] = ("ready", "error"), timeout_ms: int = 30_000) -> str:
    """Wait until body[data-state] is one of `states` (across coi-serviceworker's reload); return it."""
    page.wait_for_function(
        "states => states.includes(document.body?.dataset.state)", arg=list(states), timeout=timeout_ms
    )
    return page.evaluate("document.body.dataset.state")


def canvas_rgb(page) -> np.ndarray:
    """The viewer canvas (#view) as (H, W, 3) uint8."""
    w, h, data = page.evaluate(
        """() => {
            const c = document.getElementById('view');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            return [c.width, c.height, Array.from(d)];
        }"""
    )
    return np.asarray(data, dtype=np.uint8).reshape(h, w, 4)[..., :3]


def ort_rgb(model_path: Path, pose: np.ndarray, input_name: str = "pose", output_name: str = "rgb") -> np.ndarray:
    """onnxruntime-python (CPU) output for pose (4, 4): (1, 3, H, W) float32."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run([output_name], {input_name: np.asarray(pose, np.float32).reshape(4, 4)})[0]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of two same-shaped arrays with values in [0, peak] (inf if equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def canvas_vs_ort_psnr(page, model_path: Path, input_name: str = "pose", output_name: str = "rgb") -> float:
    """PSNR (dB) of the canvas against onnxruntime-python's output for the page's current pose.

    Waits for any pending frame first. Both images in [0, 1]; the canvas holds 8-bit
    values, so a perfect render scores about 59 dB (quantisation alone).
    """
    page.evaluate(
        "async () => { const v = await window.viewer.ready; await v.setView(...Object.values(v.view())); }"
    )
    pose = np.asarray(page.evaluate("window.viewer.pose()"), np.float32).reshape(4, 4)
    expected = ort_rgb(model_path, pose, input_name, output_name)[0].transpose(1, 2, 0)  # (H, W, 3)
    actual = canvas_rgb(page).astype(np.float32) / 255.0
    if actual.shape != expected.shape:
        raise AssertionError(f"canvas is {actual.shape}, model output is {expected.shape}")
    return psnr(actual, expected)
