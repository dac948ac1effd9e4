"""scene.json / report.json: the schema validator, the document builders, and the fixture's documents."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from browser import require_or_skip
from fake_scene import ORBIT, write_fake_report, write_fake_scene

from export import format_docs, site_format
from export.json_schema import SchemaViolation, check_schema, validate
from pipeline.errors import StageError

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ the validator

SCHEMA = {
    "type": "object",
    "required": ["n", "tag"],
    "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 10},
        "x": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "tag": {"$ref": "#/$defs/tag"},
        "kind": {"enum": ["a", "b"]},
        "level": {"enum": [0, 1]},
        "v": {"const": 2},
        "xs": {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"}},
        "sub": {"type": "object", "required": ["y"], "properties": {"y": {"type": "boolean"}}},
    },
    "$defs": {"tag": {"type": "string", "minLength": 1}},
}
GOOD = {"n": 3, "x": 0.5, "tag": "t", "kind": "a", "v": 2, "xs": [1, 2.5], "sub": {"y": True}, "extra": "kept"}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"n": None}, "n", "is required"),
        ({"n": 2.5}, "n", "must be integer"),
        ({"n": True}, "n", "must be integer"),  # JSON booleans are not numbers
        ({"n": 0}, "n", "must be >= 1"),
        ({"n": 11}, "n", "must be <= 10"),
        ({"x": 0.0}, "x", "must be > 0"),
        ({"x": math.nan}, "x", "must be number or null (finite)"),
        ({"x": math.inf}, "x", "must be number or null (finite)"),
        ({"x": "1"}, "x", "must be number or null"),
        ({"tag": ""}, "tag", "at least 1 character"),
        ({"tag": 5}, "tag", "must be string"),
        ({"kind": "c"}, "kind", 'must be one of ["a", "b"]'),
        ({"level": False}, "level", "must be one of [0, 1] (got false)"),  # JSON: false is not 0
        ({"v": 3}, "v", "must be 2"),
        ({"v": 2.0}, "v", "must be 2"),  # a version is an integer
        ({"xs": [1]}, "xs", "must have 2 to 3 items"),
        ({"xs": [1, 2, 3, 4]}, "xs", "must have 2 to 3 items"),
        ({"xs": [1, "2"]}, "xs[1]", "must be number"),
        ({"sub": {}}, "sub.y", "is required"),
        ({"sub": {"y": 1}}, "sub.y", "must be boolean"),
        ({"sub": []}, "sub", "must be object"),
    ],
)
def test_validator_names_the_field(change: dict, field: str, message: str) -> None:
    validate(GOOD, SCHEMA)
    doc = copy.deepcopy(GOOD)
    for k, v in change.items():
        if v is None:
            del doc[k]
        else:
            doc[k] = v
    with pytest.raises(SchemaViolation, match=re.escape(message)) as err:
        validate(doc, SCHEMA)
    assert err.value.field == field
    assert str(err.value).startswith(f'"{field}" ')


def test_validator_accepts_null_where_allowed_and_unlisted_fields() -> None:
    validate({**GOOD, "x": None, "another": [1, {"z": 2}]}, SCHEMA)
    validate({"n": 10, "tag": "t"}, SCHEMA)  # optional fields absent


def test_unsupported_keyword_is_refused_not_ignored() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}}
    with pytest.raises(ValueError, match="pattern"):
        check_schema(schema)
    with pytest.raises(ValueError, match="pattern"):
        validate({"s": "b"}, schema)
    # what Ajv would refuse too: a type JSON Schema does not have, `items` as a list (draft 2020-12)
    with pytest.raises(ValueError, match="unknown type"):
        check_schema({"properties": {"x": {"type": "float"}}})
    with pytest.raises(ValueError, match="must be an object"):
        check_schema({"type": "array", "items": [{"type": "number"}]})


# ------------------------------------------------------------------ the site's schemas


@pytest.mark.parametrize("kind", site_format.KINDS)
def test_site_schema_is_the_version_source(kind: str) -> None:
    path = ROOT / "site" / "schema" / f"{kind}.schema.json"
    schema = json.loads(path.read_text())
    check_schema(schema)  # only keywords we implement
    version = schema["properties"]["format"]["const"]
    assert isinstance(version, int) and site_format.format_version(kind) == version
    assert "format" in schema["required"]


def test_viewer_checks_documents_against_the_schemas() -> None:
    # The pages check scene.json and report.json against the served schemas (scene.js:
    # checkDocument, with Ajv); a literal comparison with a version number or a limit of the
    # schema would be a second source of truth.
    for js in (ROOT / "site" / "js").glob("*.js"):
        text = js.read_text()
        assert not re.search(r"format\s*[!=]==?\s*\d", text), js
        assert "4096" not in text, js  # width/height's maximum
    assert "checkDocument('scene', scene, url)" in (ROOT / "site" / "js" / "scene.js").read_text()
    assert "checkDocument('report', report, url" in (ROOT / "site" / "js" / "compare.js").read_text()


# Runs site/js/schema.js (the viewer's check: Ajv and its wording) in node on a list of
# [kind, document]; prints, for each, the first violation's message or null.
NODE_CHECK = """
import { readFileSync } from 'node:fs';
const { module, schemas, cases } = JSON.parse(readFileSync(0, 'utf8'));
const { compileSchema } = await import(module);
const checks = {};
for (const [kind, path] of Object.entries(schemas)) {
  checks[kind] = await compileSchema(JSON.parse(readFileSync(path, 'utf8')));
}
console.log(JSON.stringify(cases.map(([kind, doc]) => checks[kind](doc)?.message ?? null)));
"""


def _report(**changes) -> dict:
    views = [{"view": f"r_{k}", "gt": "gt.png", "teacher": "t.png", "student": "s.png", "psnr": 30.5 - k,
              "ssim": 0.9, "teacher_psnr": 33.5, "psnr_vs_teacher": 31.5} for k in range(3)]
    doc = site_format.report_document(
        name="s", width=64, height=64,
        summary={"psnr": 28.5, "ssim": 0.9, "psnr_vs_teacher": 29.5, "teacher_psnr": 31.5,
                                    "baseline_psnr": 12.5},
        teacher_stage={"psnr": 31.5, "ssim": None, "steps": 100, "train_seconds": 12.5}, model_card={},
        curves={"teacher": [{"step": 0, "psnr": 10.5}, {"step": 10, "psnr": 20.5}], "student": []},
        turntable={"frames": 4, "fps": 12, "size": 64, "teacher_size": 0}, views=views)
    doc.update(changes)
    return doc


def _edited(doc: dict, edit) -> dict:
    doc = copy.deepcopy(doc)
    edit(doc)
    return doc


# Values are ints or have a fraction: Python prints 2.0 as "2.0", JavaScript as "2".
# a forward-facing scene's region (scene.json's optional `region`)
REGION = {"type": "forward", "centre": [0.0, -3.0, 0.0], "rotation": [[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]],
          "extent": [[-0.5, -0.4, 0.0], [0.5, 0.4, 0.0]], "start": [0.1, -0.2, 0.0]}
BROKEN = [
    ("scene", lambda d: d.pop("input")),
    ("scene", lambda d: d.pop("reference")),
    ("scene", lambda d: d["reference"].pop("image")),
    ("scene", lambda d: d.update(format=1)),
    ("scene", lambda d: d.update(width=-3)),
    ("scene", lambda d: d.update(width="64")),
    ("scene", lambda d: d.update(height=True)),
    ("scene", lambda d: d.update(height=4097)),
    ("scene", lambda d: d.update(output_layout="bgr")),
    ("scene", lambda d: d.update(camera_convention="opencv")),
    ("scene", lambda d: d.update(name="")),
    ("scene", lambda d: d.update(up=None)),
    ("scene", lambda d: d.update(up=[0, 1])),
    ("scene", lambda d: d.update(orbit=[1, 2])),
    ("scene", lambda d: d["orbit"].update(radius="far")),
    ("scene", lambda d: d["orbit"].update(radius_min=0)),
    ("scene", lambda d: d["orbit"].update(elevation_max_deg=91)),
    ("scene", lambda d: d["background"].__setitem__(1, 2)),
    ("scene", lambda d: d["reference"]["pose"][2].append(0)),
    ("scene", lambda d: d["reference"]["pose"][1].__setitem__(3, "x")),
    ("scene", lambda d: d["preview"].pop("reference_image")),
    ("scene", lambda d: d.update(model_card=[{"params": 1}])),
    ("scene", lambda d: d.pop("camera")),
    ("scene", lambda d: d["camera"].update(fx=0)),
    ("scene", lambda d: d.update(region=dict(REGION, type="orbit"))),
    ("scene", lambda d: d.update(region={k: v for k, v in REGION.items() if k != "start"})),
    ("scene", lambda d: d.update(region=dict(REGION, extent=[[0.0, 0.0, 0.0]]))),
    ("report", lambda d: d.update(format=1)),
    ("report", lambda d: d.pop("views")),
    ("report", lambda d: d["views"][1].pop("psnr")),
    ("report", lambda d: d["views"][2].update(student="")),
    ("report", lambda d: d["summary"].update(ssim="high")),
    ("report", lambda d: d["teacher_stage"].update(steps=1.5)),
    ("report", lambda d: d["curves"]["teacher"][1].update(step=-1)),
    ("report", lambda d: d["turntable"].update(fps=0)),
]


def test_viewer_words_violations_as_export_does(tmp_path: Path) -> None:
    """site/js/schema.js (Ajv, in node) finds the same first violation as export/json_schema.py,
    worded the same, and accepts what it accepts."""
    node = shutil.which("node")
    require_or_skip(node is not None, "node not found")
    vendored = ROOT / "site" / "vendor" / "ajv2020.min.mjs"
    require_or_skip(vendored.exists(), "site/vendor missing: run `npm ci --prefix site`")
    good = {"scene": _scene(), "report": _report()}
    cases = [("scene", good["scene"]), ("report", good["report"]), ("scene", [good["scene"]])]
    cases += [(kind, _edited(good[kind], edit)) for kind, edit in BROKEN]
    expected = []
    for kind, doc in cases:
        try:
            validate(doc, site_format.load_schema(kind))
            expected.append(None)
        except SchemaViolation as err:
            expected.append(str(err))
    assert expected[:2] == [None, None] and None not in expected[2:]
    request = {"module": (ROOT / "site" / "js" / "schema.js").as_uri(),
               "schemas": {k: str(site_format.SCHEMA_DIR / f"{k}.schema.json") for k in site_format.KINDS},
               "cases": cases}
    run = subprocess.run([node, "--input-type=module", "-e", NODE_CHECK], input=json.dumps(request),
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == expected


def _scene(**changes) -> dict:
    pose = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 4.0], [0, 0, 0, 1.0]]
    camera = {"fx": 70.0, "fy": 70.0, "cx": 32.0, "cy": 32.0}
    doc = site_format.scene_document(name="s", width=64, height=64, camera=camera, up=[0, 0, 1], background=[1, 1, 1],
                                     orbit=ORBIT, reference_pose=pose,
                                     preview={"model": "preview.onnx", "width": 32, "height": 32,
                                              "reference_image": "preview_reference.png"})
    doc.update(changes)
    return doc


def test_scene_document_is_valid_and_names_the_report() -> None:
    doc = _scene()
    site_format.check(doc, "scene", "scene.json")
    site_format.check(_scene(region=REGION), "scene", "scene.json")  # a forward-facing scene's
    assert doc["format"] == site_format.format_version("scene")
    assert doc["report"] == site_format.REPORT_FILE
    assert isinstance(doc["width"], int) and all(isinstance(v, float) for v in doc["up"])


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("input"), '"input" is required'),
        (lambda d: d.pop("reference"), '"reference" is required'),
        (lambda d: d["reference"].pop("pose"), '"reference.pose" is required'),
        (lambda d: d.update(format=1), '"format" must be 2'),
        (lambda d: d.update(width=-3), '"width" must be >= 1'),
        (lambda d: d.update(output_layout="bgr"), '"output_layout" must be one of'),
        (lambda d: d.update(up=[0.0, 0.0, 0.0]), '"up" must not be the zero vector'),
        (lambda d: d["orbit"].update(radius=9.0), '"orbit.radius" must be in [radius_min, radius_max]'),
        (lambda d: d["orbit"].update(elevation_deg=1.0), '"orbit.elevation_deg" must be in'),
        (lambda d: d["preview"].update(width=65), '"preview.width" must be at most the full width 64'),
        (lambda d: d["reference"]["pose"][2].append(0.0), '"reference.pose[2]" must have 4 items'),
        (lambda d: d.update(region=dict(REGION, start=[0.6, 0.0, 0.0])), '"region.start" must be inside region.extent'),
        (lambda d: d.update(region=dict(REGION, extent=[[1.0, 0, 0], [0.5, 0.4, 0]])),
         '"region.extent" must have lowest <= highest'),
    ],
)
def test_export_refuses_an_invalid_scene_json(tmp_path: Path, edit, field: str) -> None:
    # export/stage.py writes scene.json with site_format.write: nothing invalid reaches the viewer.
    assert site_format.format_version("scene") == 2  # the messages below spell out version 2
    doc = _scene()
    edit(doc)
    path = tmp_path / "scene.json"
    with pytest.raises(StageError) as err:
        site_format.write(path, doc, "scene")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and field in message, message
    assert "site/schema/scene.schema.json" in message
    assert not path.exists()


def test_report_stage_refuses_an_invalid_scene_json(tmp_path: Path) -> None:
    path = tmp_path / "scene.json"
    path.write_text(json.dumps({k: v for k, v in _scene().items() if k != "orbit"}))
    with pytest.raises(StageError, match=r'"orbit" is required .*; re-run export'):
        site_format.read(path, "scene", "re-run export")
    path.write_text("{")
    with pytest.raises(StageError, match="missing or unreadable"):
        site_format.read(path, "scene", "re-run export")


def test_scene_format_doc_is_up_to_date() -> None:
    """export/SCENE_FORMAT.md is `python -m export.format_docs`; regenerate it with that command."""
    text = format_docs.reference()
    assert (ROOT / "export" / "SCENE_FORMAT.md").read_text() == text, \
        "export/SCENE_FORMAT.md is stale: run `python -m export.format_docs`"
    # every field of both schemas has its row, nested ones and list items included
    for row in ("| `orbit.radius` | number | yes | > 0 |", "| `reference.pose[i][j]` | number |",
                "| `preview.width` | integer | yes | in [1, 4096] |", "| `views[i].psnr` | number | yes |",
                "| `teacher_stage.steps` | integer or null | no |", "| `format` | integer | yes | = `2` |"):
        assert row in text, row


def test_fixture_documents_come_from_the_same_code_and_validate(tmp_path: Path) -> None:
    scene_dir = write_fake_scene(tmp_path / "site", "fake")
    scene = json.loads((scene_dir / "scene.json").read_text())
    assert site_format.read(scene_dir / "scene.json", "scene", "") == scene
    assert scene["format"] == site_format.format_version("scene") and scene["output_layout"] == "rgb"
    report_path = write_fake_report(scene_dir)
    assert report_path == scene_dir / scene["report"]
    report = site_format.read(report_path, "report", "")
    assert report["format"] == site_format.format_version("report") and len(report["views"]) == 3
    for view in report["views"]:
        assert (report_path.parent / view["student"]).is_file()
