"""Captures in every layout (pipeline/formats/): the toy scene written as nerfstudio, instant-ngp,
COLMAP and LLFF captures (pipeline/toy_capture.py) reads back to the rays its images were
rendered with, placed (pipeline/placement.py) as the Blender original is; the data stage writes
them as one canonical scene; bad captures get one line each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from test_reliability import error_line, main_inproc

from pipeline.cameras import Intrinsics, camera_directions, pinhole_rays
from pipeline.config import ToySceneConfig
from pipeline.errors import DataError
from pipeline.formats import detect, read_capture
from pipeline.placement import place, place_capture
from pipeline.scene import load_split
from pipeline.toy_capture import render, write_toy_capture
from pipeline.toy_scene import write_toy_scene

CFG = ToySceneConfig(size=16, n_train=10, n_val=1, n_test=3)
BOX = [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]  # the teacher's default box
# non-square, off-centre principal point, fx != fy, OpenCV distortion with every term (a phone's lens)
PHONE = Intrinsics(20.0, 21.0, 9.3, 7.1, 20, 15, k1=-0.08, k2=0.02, k3=0.004, p1=0.002, p2=-0.001)
PHONE_COLMAP = Intrinsics(20.0, 21.0, 9.3, 7.1, 20, 15, k1=-0.08, k2=0.02, p1=0.002, p2=-0.001)  # OPENCV: no k3
# name -> (layout, camera (None: the toy's own), masks, nerfstudio's sparse points)
CAPTURES = {
    "nerfstudio": ("nerfstudio", None, True, True),
    "nerfstudio_phone": ("nerfstudio", PHONE, False, False),
    "instant-ngp": ("instant-ngp", None, False, False),
    "colmap": ("colmap", None, False, False),
    "colmap_phone": ("colmap", PHONE_COLMAP, True, False),
    "llff": ("llff", None, True, False),
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, dict[str, Path], dict[str, dict]]:
    """The Blender original and every capture of it: (blender root, name -> root, name -> truth)."""
    base = tmp_path_factory.mktemp("captures")
    write_toy_scene(CFG, base / "blender")
    roots, truths = {}, {}
    for name, (layout, camera, masks, points) in CAPTURES.items():
        roots[name] = base / name
        truths[name] = write_toy_capture(CFG, roots[name], layout, camera=camera, masks=masks, sparse_points=points)
    return base / "blender", roots, truths


def rays(c2w: np.ndarray, camera: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel's ray (origins, unit directions), (H * W, 3) each."""
    o, d = pinhole_rays(torch.as_tensor(c2w, dtype=torch.float32), camera_directions(camera))
    return o.reshape(-1, 3).double().numpy(), d.reshape(-1, 3).double().numpy()


def same_camera(a: Intrinsics, b: Intrinsics) -> bool:
    """Equal to float precision (a field of view in radians gives the focal length back to ~1 ulp)."""
    return (a.width, a.height) == (b.width, b.height) and np.allclose(
        [a.fx, a.fy, a.cx, a.cy, *a.distortion], [b.fx, b.fy, b.cx, b.cy, *b.distortion], rtol=1e-12, atol=1e-12)


def blender_frames(root: Path) -> dict[str, tuple[np.ndarray, Intrinsics]]:
    """The Blender original's frames under the capture names (`<split>_<index>`)."""
    cap = read_capture(root, "blender")
    return {f"{split}_{k:03d}": (f.c2w, f.intrinsics) for split, frames in cap.splits.items()
            for k, f in enumerate(frames)}


def test_detect_names_each_layout(scenes, tmp_path):
    blender, roots, _ = scenes
    assert detect(blender) == "blender"
    for name, (layout, *_) in CAPTURES.items():
        assert detect(roots[name]) == layout
    with pytest.raises(DataError, match=r"no capture found; looked for transforms_train.json \(blender\), "
                                        r"transforms.json \(nerfstudio, instant-ngp\), sparse/0/ or sparse/"):
        detect(tmp_path)


@pytest.mark.parametrize("name", CAPTURES)
def test_each_layout_reads_back_the_rays_of_its_images(scenes, name):
    """Placed rays of every pixel equal the rays the images were rendered with, placed by the transform
    the Blender original gets from the same facts (cameras; COLMAP's points; LLFF's bounds)."""
    blender, roots, truths = scenes
    cap = read_capture(roots[name])
    original = blender_frames(blender)
    truth = truths[name]
    assert sorted(f.name for f in cap.frames) == sorted(truth)
    placement = place_capture(cap, BOX)
    bounds = [f.bounds for f in cap.frames]
    reference = place(np.stack([original[f.name][0] for f in cap.frames]), [truth[f.name][2] for f in cap.frames],
                      BOX, points=cap.points, bounds=None if None in bounds else np.asarray(bounds))
    assert np.allclose(placement.matrix, reference.matrix, atol=1e-9), "another transform than the original's"
    for f in cap.frames:
        c2w, camera = original[f.name][0], truth[f.name][2]
        if CAPTURES[name][1] is None:
            assert camera == original[f.name][1]  # the toy's own camera: the Blender original's
        assert same_camera(f.intrinsics, camera)
        got_o, got_d = rays(placement.apply_c2w(f.c2w), f.intrinsics)
        want_o, want_d = rays(placement.apply_c2w(c2w), camera)
        assert np.allclose(got_o, want_o, atol=1e-5) and np.allclose(got_d, want_d, atol=1e-5), f.name


def test_the_same_scene_in_two_layouts_gets_the_same_transform(scenes):
    blender, roots, _ = scenes
    transform = {name: place_capture(read_capture(roots[name]), BOX) for name in ("instant-ngp", "nerfstudio",
                                                                                   "colmap", "llff")}
    original = place_capture(read_capture(blender, "blender"), BOX)
    # from the cameras alone (instant-ngp, and the Blender original read as a capture)
    assert transform["instant-ngp"].radius_from == "cameras"
    assert np.allclose(transform["instant-ngp"].matrix, original.matrix, atol=1e-9)
    # from the same sparse points (nerfstudio's ply_file_path, the COLMAP model's points3D)
    assert transform["nerfstudio"].radius_from == transform["colmap"].radius_from == "points"
    assert np.allclose(transform["nerfstudio"].matrix, transform["colmap"].matrix, atol=1e-9)
    # with other facts about the scene's reach, the scale differs but the centre and the turn do not
    for name in ("nerfstudio", "colmap", "llff"):
        assert np.allclose(transform[name].centre, original.centre, atol=1e-9)
        assert np.allclose(transform[name].rotation, original.rotation, atol=1e-9)


def _distort(xy: np.ndarray, k: Intrinsics) -> np.ndarray:
    """OpenCV's forward lens model, written out (the closed form the rays must satisfy)."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = 1 + k.k1 * r2 + k.k2 * r2**2 + k.k3 * r2**3
    return np.stack([x * radial + 2 * k.p1 * x * y + k.p2 * (r2 + 2 * x * x),
                     y * radial + k.p1 * (r2 + 2 * y * y) + 2 * k.p2 * x * y], -1)


@pytest.mark.parametrize("name", ["nerfstudio_phone", "colmap_phone"])
def test_distorted_rays_meet_the_lens_closed_form(scenes, name):
    """Each pixel's ray, taken back into its camera and through the lens, lands on the pixel's centre."""
    _, roots, _ = scenes
    cap = read_capture(roots[name])
    want = CAPTURES[name][1]
    f = cap.splits["train"][0]
    assert same_camera(f.intrinsics, want), "the camera as written: fx, fy, cx, cy, size and k1 k2 k3 p1 p2"
    _, d = rays(f.c2w, f.intrinsics)
    cam = d @ f.c2w[:3, :3]  # world -> camera (OpenGL: x right, y up, looking down -z)
    xy = np.stack([cam[:, 0] / -cam[:, 2], -cam[:, 1] / -cam[:, 2]], -1)  # OpenCV's normalised x, y (y down)
    uv = _distort(xy, want) * [want.fx, want.fy] + [want.cx, want.cy]
    j, i = np.mgrid[0:want.height, 0:want.width]
    assert np.abs(uv - np.stack([i.ravel() + 0.5, j.ravel() + 0.5], -1)).max() < 1e-3  # pixels


def _config(ws: Path, root: Path, extra: str = "") -> str:
    (ws / "configs").mkdir(parents=True, exist_ok=True)
    (ws / "configs" / "cap.yaml").write_text(f"name: cap\ndata: {{root: '{root}'{extra}}}\n")
    return "configs/cap.yaml"


@pytest.mark.parametrize("name", CAPTURES)
def test_data_stage_writes_one_canonical_scene(scenes, name, tmp_path, monkeypatch, capsys):
    """Through the data stage: the scene it writes (Blender layout) loads to the same placed rays, and
    its RGBA images are the toy's renders (alpha from the mask, 255 without one)."""
    _, roots, truths = scenes
    ws = tmp_path / "ws"
    proc = main_inproc(ws, monkeypatch, capsys, "stage", "data", _config(ws, roots[name]))
    assert proc.returncode == 0, proc.stderr
    out = ws / "runs" / "cap" / "data"
    placement = json.loads((out / "placement.json").read_text())
    assert placement["source"]["kind"] == CAPTURES[name][0]
    matrix = np.asarray(placement["matrix"])
    assert np.allclose(matrix, place_capture(read_capture(roots[name]), BOX).matrix, atol=1e-12)
    truth, masks = truths[name], CAPTURES[name][2]
    seen = 0
    for split in ("train", "val", "test"):
        if not (out / "scene" / f"transforms_{split}.json").exists():
            continue
        views = load_split(out / "scene", split)
        for k, view in enumerate(views.names):
            _, c2w, camera = truth[view]
            assert same_camera(views.intrinsics[k], camera)
            want = np.eye(4)
            want[:3, :3], want[:3, 3] = matrix[:3, :3] / placement["scale"] @ c2w[:3, :3], matrix[:3, :3] @ c2w[:3, 3]
            want[:3, 3] += matrix[:3, 3]
            got_o, got_d = rays(views.c2w[k].double().numpy(), views.intrinsics[k])
            want_o, want_d = rays(want, camera)
            assert np.allclose(got_o, want_o, atol=1e-5) and np.allclose(got_d, want_d, atol=1e-5)
            rgba = np.round(render(c2w, camera) * 255)
            img = np.round(views.images[k].numpy() * 255)
            assert np.array_equal(img[..., :3], rgba[..., :3])
            assert np.array_equal(img[..., 3], rgba[..., 3] if masks else np.full(rgba.shape[:2], 255.0))
            seen += 1
    assert seen == len(truth)
    if CAPTURES[name][1] is not None:
        frame = json.loads((out / "scene" / "transforms_train.json").read_text())["frames"][0]
        assert frame["camera_model"] == "OPENCV" and frame["k1"] == -0.08 and frame["p2"] == -0.001


def test_max_size_resizes_and_a_rerun_takes_the_cache(tmp_path, monkeypatch, capsys):
    cfg = ToySceneConfig(size=32, n_train=7, n_val=1, n_test=2)
    truth = write_toy_capture(cfg, tmp_path / "cap", "nerfstudio", masks=True)
    ws = tmp_path / "ws"
    args = ("stage", "data", _config(ws, tmp_path / "cap", ", max_size: 16"))
    first = main_inproc(ws, monkeypatch, capsys, *args)
    assert first.returncode == 0 and "wrote 10 images" in first.stdout and "0 from the cache" in first.stdout
    views = load_split(ws / "runs" / "cap" / "data" / "scene", "train")
    assert (views.width, views.height) == (16, 16)
    name = views.names[0]
    assert views.intrinsics[0] == truth[name][2].resized(16, 16)
    # area resampling of premultiplied colour: each output pixel is its 2 x 2 block's mean
    rgba = iio.imread(tmp_path / "cap" / "images" / f"{name}.png").astype(np.float64) / 255
    alpha = iio.imread(tmp_path / "cap" / "masks" / f"{name}.png").astype(np.float64) / 255
    block = np.concatenate([rgba * alpha[..., None], alpha[..., None]], -1).reshape(16, 2, 16, 2, 4).mean((1, 3))
    a = block[..., 3:]
    want = np.concatenate([np.where(a > 0, block[..., :3] / np.maximum(a, 1e-9), 0), a], -1)
    assert np.abs(views.images[0].numpy() - want).max() <= 0.5 / 255 + 1e-6
    # a photo without a mask (8-bit RGB) takes PIL's area filter directly: within a level of the mean
    write_toy_capture(cfg, tmp_path / "rgb", "nerfstudio")
    rgb_ws = tmp_path / "rgb_ws"
    cfg_path = _config(rgb_ws, tmp_path / "rgb", ", max_size: 16")
    proc = main_inproc(rgb_ws, monkeypatch, capsys, "stage", "data", cfg_path)
    assert proc.returncode == 0, proc.stderr
    img = iio.imread(rgb_ws / "runs" / "cap" / "data" / "scene" / "train" / f"{name}.png").astype(np.float64)
    block = iio.imread(tmp_path / "rgb" / "images" / f"{name}.png").astype(np.float64).reshape(16, 2, 16, 2, 3)
    assert np.abs(img[..., :3] - block.mean((1, 3))).max() <= 1.0 and (img[..., 3] == 255).all()
    # a re-run with other settings (another teacher box) converts nothing again
    again = main_inproc(ws, monkeypatch, capsys, *args, "--set", "teacher.aabb=[-1, -1, -1, 1, 1, 1]")
    assert again.returncode == 0 and "10 from the cache" in again.stdout, again.stdout
    placement = json.loads((ws / "runs" / "cap" / "data" / "placement.json").read_text())
    assert placement["box"] == [-1, -1, -1, 1, 1, 1]


def test_data_stage_says_what_the_scene_is(tmp_path, monkeypatch, capsys):
    """scene_type in placement.json: a masked capture is an object, the same unmasked capture a 360
    scene; the toy with forward-facing surroundings is forward; data.scene_type overrides."""
    cfg = ToySceneConfig(size=16, n_train=7, n_val=1, n_test=2)
    write_toy_capture(cfg, tmp_path / "masked", "nerfstudio", masks=True)
    write_toy_capture(cfg, tmp_path / "bare", "nerfstudio")
    cases = (("masked", "object", ""), ("bare", "360", ""), ("bare", "forward", ", scene_type: forward"))
    for name, want, extra in cases:
        ws = tmp_path / f"ws_{name}_{want}"
        proc = main_inproc(ws, monkeypatch, capsys, "stage", "data", _config(ws, tmp_path / name, extra))
        assert proc.returncode == 0, proc.stderr
        placement = json.loads((ws / "runs" / "cap" / "data" / "placement.json").read_text())
        assert placement["scene_type"] == want and f"scene type: {want}" in proc.stdout
    ws = tmp_path / "ws_toy"
    (ws / "configs").mkdir(parents=True)
    (ws / "configs" / "t.yaml").write_text("name: t\ndata: {kind: toy, toy: {size: 8, n_train: 4, n_val: 1, "
                                           "n_test: 2, surroundings: forward}}\n")
    proc = main_inproc(ws, monkeypatch, capsys, "stage", "data", "configs/t.yaml")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((ws / "runs" / "t" / "data" / "placement.json").read_text())["scene_type"] == "forward"


def test_blender_scene_within_max_size_is_read_in_place(scenes, tmp_path, monkeypatch, capsys):
    blender, _, _ = scenes
    ws = tmp_path / "ws"
    proc = main_inproc(ws, monkeypatch, capsys, "stage", "data", _config(ws, blender))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((ws / "runs" / "cap" / "data" / "record.json").read_text())
    assert record["outputs"]["scene"] == str(blender.resolve())
    placement = json.loads((ws / "runs" / "cap" / "data" / "placement.json").read_text())
    assert placement["matrix"] == np.eye(4).tolist() and placement["source"]["kind"] == "blender"
    # larger than max_size: written at max_size, not placed again, still an object
    proc = main_inproc(ws, monkeypatch, capsys, "stage", "data", _config(ws, blender, ", max_size: 8"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((ws / "runs" / "cap" / "data" / "placement.json").read_text())["scene_type"] == "object"
    views = load_split(ws / "runs" / "cap" / "data" / "scene", "test")
    original = load_split(blender, "test")
    assert (views.width, views.height) == (8, 8) and torch.equal(views.c2w, original.c2w)
    assert views.intrinsics == [c.resized(8, 8) for c in original.intrinsics]


# ---------------------------------------------------------------------------
# bad captures: one line each


def _copy(scenes, name: str, tmp_path: Path) -> Path:
    _, roots, _ = scenes
    return Path(shutil.copytree(roots[name], tmp_path / name))


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


BAD = {
    "unknown camera model (nerfstudio)": (
        "nerfstudio", lambda r: _edit_json(r / "transforms.json", lambda m: m.update(camera_model="OPENCV_FISHEYE")),
        ("transforms.json: 'camera_model' is 'OPENCV_FISHEYE', which is not supported", "expected one of PINHOLE")),
    "unknown camera model (COLMAP)": (
        "colmap", lambda r: _replace(r / "sparse" / "0" / "cameras.txt", "1 PINHOLE", "1 SIMPLE_RADIAL_FISHEYE"),
        ("camera model SIMPLE_RADIAL_FISHEYE is not supported", "expected one of SIMPLE_PINHOLE")),
    "COLMAP model with no registered images": (
        "colmap", lambda r: (r / "sparse" / "0" / "images.txt").write_text("# no images\n"),
        ("sparse/0: the COLMAP model has no registered images",)),
    "poses_bounds.npy of the wrong shape": (
        "llff", lambda r: np.save(r / "poses_bounds.npy", np.load(r / "poses_bounds.npy")[:, :15]),
        ("poses_bounds.npy: expected an N x 17 array", "got shape (14, 15)")),
    "a mask of another size": (
        "llff", lambda r: iio.imwrite(r / "masks" / "train_003.png", np.zeros((8, 8), np.uint8)),
        ("masks/train_003.png: mask is 8x8 but its image", "images/train_003.png is 16x16")),
    "a split with no views left": (  # COLMAP's test views: the 1st and 9th image by name
        "colmap", lambda r: [(r / "images" / f"{n}.png").unlink() for n in ("test_000", "train_005")],
        ("no test views left: the images of all 2 test frames are missing",)),
    "no capture": (
        "nerfstudio", lambda r: (r / "transforms.json").unlink(),
        ("no capture found; looked for transforms_train.json (blender)", "poses_bounds.npy (llff)")),
    "unknown camera model in a Blender scene": (
        "blender", lambda r: _edit_json(r / "transforms_train.json", lambda m: m["frames"][0].update(
            camera_model="FISHEYE")),
        ("transforms_train.json: 'frames[0].camera_model' is 'FISHEYE', which is not supported",)),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_capture_is_one_line(case, scenes, tmp_path, monkeypatch, capsys):
    name, break_it, needles = BAD[case]
    blender, roots, _ = scenes
    root = Path(shutil.copytree(blender if name == "blender" else roots[name], tmp_path / name))
    break_it(root)
    ws = tmp_path / "ws"
    error_line(main_inproc(ws, monkeypatch, capsys, "stage", "data", _config(ws, root)), 1, *needles)


def test_missing_images_are_skipped_with_one_warning(scenes, tmp_path, monkeypatch, capsys):
    _, roots, truths = scenes
    root = Path(shutil.copytree(roots["nerfstudio"], tmp_path / "ns"))
    for n in ("train_001", "train_004", "train_005", "train_007"):
        (root / "images" / f"{n}.png").unlink()
    ws = tmp_path / "ws"
    proc = main_inproc(ws, monkeypatch, capsys, "stage", "data", _config(ws, root))
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stdout.splitlines() if "warning:" in ln]
    assert warnings == ["[data] warning: skipped 4 frame(s) whose image is missing: images/train_001.png, "
                        "images/train_004.png, images/train_005.png and 1 more"], proc.stdout
    views = load_split(ws / "runs" / "cap" / "data" / "scene", "train")
    assert len(views.names) == 10 - 4 and "train_001" not in views.names
    skipped = json.loads((ws / "runs" / "cap" / "data" / "placement.json").read_text())["source"]["skipped"]
    assert len(skipped) == 4


def test_instant_ngp_keys(scenes, tmp_path):
    """instant-ngp's scale, offset and box are recorded (its cube in the file's coordinates), a field of
    view in degrees wins over fl_x and radians, and file paths may leave the extension out."""
    root = _copy(scenes, "instant-ngp", tmp_path)

    def edit(m):
        m.update(x_fov=90.0, fl_x=123.0)
        for fr in m["frames"]:
            fr["file_path"] = fr["file_path"].removesuffix(".png")

    _edit_json(root / "transforms.json", edit)
    cap = read_capture(root)
    assert len(cap.frames) == len(scenes[2]["instant-ngp"])
    assert cap.source == {"scale": 0.5, "offset": [0.1, 0.2, 0.3], "aabb_scale": 1,
                          "ngp_box": pytest.approx([-0.2, -0.4, -0.6, 1.8, 1.6, 1.4])}
    k = cap.frames[0].intrinsics
    assert k.fx == pytest.approx(8.0) and k.fy == pytest.approx(8.0)  # 16 px across 90 degrees


def test_splits_from_lists_or_every_8th(scenes, tmp_path):
    _, roots, truths = scenes
    names = sorted(truths["llff"])
    for name in ("llff", "colmap"):  # no split lists: frames 0, 8, ... by name are the test views
        cap = read_capture(roots[name])
        assert [f.name for f in cap.splits["test"]] == names[::8]
        assert [f.name for f in cap.splits["train"]] == [n for k, n in enumerate(names) if k % 8]
    cap = read_capture(roots["nerfstudio"])  # nerfstudio's train/val/test_filenames: the toy's own splits
    for split in ("train", "val", "test"):
        assert [f.name for f in cap.splits[split]] == [n for n in names if truths["nerfstudio"][n][0] == split]
    root = _copy(scenes, "nerfstudio", tmp_path)
    _edit_json(root / "transforms.json", lambda m: m.pop("test_filenames"))
    with pytest.raises(DataError, match="has split lists but no 'test_filenames'"):
        read_capture(root)
    _edit_json(root / "transforms.json", lambda m: [m.pop(f"{s}_filenames") for s in ("train", "val")])
    assert [f.name for f in read_capture(root).splits["test"]] == names[::8]


def test_ply_points_ascii_and_binary(tmp_path):
    from pipeline.formats.nerfstudio import read_ply_points

    pts = np.random.default_rng(0).normal(size=(5, 3))
    head = "ply\nformat {}\nelement vertex 5\nproperty double x\nproperty double y\nproperty double z\n" \
           "property uchar red\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
    rows = np.zeros(5, dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1")])
    rows["x"], rows["y"], rows["z"] = pts.T
    (tmp_path / "b.ply").write_bytes(head.format("binary_little_endian 1.0").encode() + rows.tobytes())
    (tmp_path / "a.ply").write_text(head.format("ascii 1.0") + "".join(
        f"{p[0]!r} {p[1]!r} {p[2]!r} 7\n" for p in pts.tolist()))
    assert np.array_equal(read_ply_points(tmp_path / "b.ply"), pts)
    assert np.array_equal(read_ply_points(tmp_path / "a.ply"), pts)
    (tmp_path / "c.ply").write_text(head.format("binary_big_endian 1.0"))
    with pytest.raises(DataError, match="PLY format 'binary_big_endian' is not supported"):
        read_ply_points(tmp_path / "c.ply")


def test_colmap_binary_model_reads_as_its_text(scenes, tmp_path):
    import pycolmap

    root = _copy(scenes, "colmap", tmp_path)
    model = root / "sparse" / "0"
    pycolmap.Reconstruction(str(model)).write_binary(str(model))
    for txt in model.glob("*.txt"):
        txt.unlink()
    assert (model / "cameras.bin").is_file() and detect(root) == "colmap"
    text, binary = read_capture(scenes[1]["colmap"]), read_capture(root)
    assert [f.name for f in binary.frames] == [f.name for f in text.frames]
    assert np.allclose(np.stack([f.c2w for f in binary.frames]), np.stack([f.c2w for f in text.frames]), atol=1e-12)
    assert np.array_equal(binary.points, text.points)
