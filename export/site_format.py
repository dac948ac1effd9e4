"""scene.json and report.json: build them, check them against their schema, write and read them.

The formats, version numbers included, are defined once, by the JSON Schemas the site serves
(`site/schema/{scene,report}.schema.json`); the viewer checks every file it loads against the
same files (`site/js/schema.js`, with Ajv, wording a violation as `json_schema.SchemaViolation`
does), and `export/SCENE_FORMAT.md` is generated from them (`python -m export.format_docs`).
Export, the report stage and the test fixture build their documents here, and nothing is
written that the schema refuses. A library module, not a stage.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import StageError
from pipeline.io import atomic_write_json

from .json_schema import SchemaViolation, check_schema, validate

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "site" / "schema"
# the schemas decide what export and report write: part of those stages' code key (pipeline/codedeps.py)
BUILD_SOURCES = ("../site/schema/*.schema.json",)
KINDS = ("scene", "report")
# Where the report stage writes report.json, relative to scene.json (scene.json's "report" field).
REPORT_FILE = "report/report.json"


@functools.cache
def load_schema(kind: str) -> dict:
    """The parsed schema of `kind` ('scene' or 'report'), checked to use only keywords we implement."""
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}; expected one of {KINDS}")
    path = SCHEMA_DIR / f"{kind}.schema.json"
    schema = json.loads(path.read_text())
    check_schema(schema, str(path))
    return schema


def format_version(kind: str) -> int:
    """The format version of `kind`: the schema's `properties.format.const`."""
    return load_schema(kind)["properties"]["format"]["const"]


def scene_document(*, name: str, width: int, height: int, camera: dict, up: Sequence[float],
                   background: Sequence[float],
                   orbit: dict, reference_pose: Sequence[Sequence[float]], output: str = "rgba",
                   output_layout: str = "rgba255", model: str = "model.onnx", reference_image: str = "reference.png",
                   model_fp16: str | None = None, preview: dict | None = None, model_card: dict | None = None,
                   report: str | None = REPORT_FILE, placement: dict | None = None,
                   region: dict | None = None) -> dict:
    """A scene.json document (export/SCENE_FORMAT.md). File names are relative to scene.json.

    orbit: target [3], radius, radius_min, radius_max (world units), azimuth_deg, elevation_deg,
    elevation_min_deg, elevation_max_deg (degrees). reference_pose: (4, 4) camera-to-world,
    row-major, OpenGL camera. camera: fx, fy, cx, cy (pixels). region: a forward-facing scene's
    (type, centre, rotation, extent, start). Optional parts are left out when None.
    """
    doc: dict[str, Any] = {
        "format": format_version("scene"),
        "name": name,
        "model": model,
        "input": "pose",
        "output": output,
        "output_layout": output_layout,
        "width": int(width),
        "height": int(height),
        "camera": {k: float(camera[k]) for k in ("fx", "fy", "cx", "cy")},
        "camera_convention": "opengl",
        "up": [float(v) for v in up],
        "background": [float(v) for v in background],
        "orbit": {k: [float(x) for x in v] if k == "target" else float(v) for k, v in orbit.items()},
        "reference": {"pose": [[float(x) for x in row] for row in reference_pose], "image": reference_image},
    }
    optional = {"model_fp16": model_fp16, "preview": preview, "report": report, "model_card": model_card,
                "placement": placement, "region": region}
    doc.update({k: v for k, v in optional.items() if v is not None})
    return doc


def report_document(*, name: str, width: int, height: int, summary: dict, teacher_stage: dict, model_card: dict,
                    curves: dict, turntable: dict, views: list[dict]) -> dict:
    """A report.json document (site/schema/report.schema.json). File names are relative to report.json."""
    return {"format": format_version("report"), "name": name, "width": int(width), "height": int(height),
            "summary": summary,
            "teacher_stage": teacher_stage, "model_card": model_card, "curves": curves, "turntable": turntable,
            "views": views}


def _scene_relations(doc: dict) -> None:
    """The checks across fields that JSON Schema cannot express; the viewer (site/js/scene.js) makes them too."""
    if math.hypot(*doc["up"]) < 1e-6:
        raise SchemaViolation("up", f"must not be the zero vector (got {doc['up']})")
    o = doc["orbit"]
    if not o["radius_min"] <= o["radius"] <= o["radius_max"]:
        raise SchemaViolation("orbit.radius", f"must be in [radius_min, radius_max] = "
                                              f"[{o['radius_min']}, {o['radius_max']}] (got {o['radius']})")
    if not o["elevation_min_deg"] <= o["elevation_deg"] <= o["elevation_max_deg"]:
        raise SchemaViolation("orbit.elevation_deg", f"must be in [elevation_min_deg, elevation_max_deg] = "
                                                     f"[{o['elevation_min_deg']}, {o['elevation_max_deg']}] "
                                                     f"(got {o['elevation_deg']})")
    if "region" in doc:
        lo, hi = doc["region"]["extent"]
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise SchemaViolation("region.extent", f"must have lowest <= highest on every axis (got {lo}, {hi})")
        if any(not a <= v <= b for a, v, b in zip(lo, doc["region"]["start"], hi, strict=True)):
            raise SchemaViolation("region.start", f"must be inside region.extent (got {doc['region']['start']})")
    for k in ("width", "height"):
        if "preview" in doc and doc["preview"][k] > doc[k]:
            raise SchemaViolation(f"preview.{k}", f"must be at most the full {k} {doc[k]} (got {doc['preview'][k]})")


def check(doc: Any, kind: str, where: Path | str) -> None:
    """Raise a one-line StageError naming `where` and the field if `doc` is not a valid `kind` document."""
    try:
        validate(doc, load_schema(kind))
        if kind == "scene":
            _scene_relations(doc)
    except SchemaViolation as err:
        raise StageError(f"{where}: {err} (format: site/schema/{kind}.schema.json)") from None


def write(path: Path, doc: dict, kind: str) -> None:
    """Check `doc` against the `kind` schema, then write it atomically to `path`."""
    check(doc, kind, path)
    atomic_write_json(path, doc)


def read(path: Path, kind: str, redo: str) -> dict:
    """Parse and check a `kind` document; a missing, unreadable or invalid file is a StageError ending in `redo`."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise StageError(f"{path}: missing or unreadable ({err.__class__.__name__}); {redo}") from None
    try:
        check(doc, kind, path)
    except StageError as err:
        raise StageError(f"{err}; {redo}") from None
    return doc


def region_pose(region: dict, position) -> np.ndarray:
    """(4, 4) the pose of a forward-facing scene's region camera (scene.json's `region`) at
    `position` (its frame): site/js/camera.js's RegionCamera, for export and report alike."""
    rot = np.asarray(region["rotation"], dtype=np.float64)
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = np.asarray(region["centre"]) + rot @ np.asarray(position, dtype=np.float64)
    return pose
