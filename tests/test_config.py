import dataclasses
import typing

import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_shipped_configs_load():
    toy = load_config(ROOT / "configs" / "toy.yaml")
    assert isinstance(toy, Config) and toy.name == "toy" and toy.data.kind == "toy"
    lego = load_config(ROOT / "configs" / "lego.yaml")
    assert lego.data.kind == "blender"
    gpu = load_config(ROOT / "configs" / "lego_gpu.yaml")
    assert gpu.student.mobiler2l.width == 256 and gpu.student.output_size == 800  # MobileR2L's size
    assert lego.student.kind == "gridlf" and lego.student.train.batch_mode == "rays"
    capture = load_config(ROOT / "configs" / "capture.yaml", ["data.root=/scans/cape"])
    assert (capture.name, capture.data.kind, capture.student.kind) == ("cape", "auto", "gridlf")


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_full_path_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'teacher.stpes'; did you mean 'steps'\?"):
        load_config(write(tmp_path, "teacher:\n  stpes: 3\n"))


def test_wrong_type_names_full_path(tmp_path):
    with pytest.raises(ConfigError, match=r"'student.mobiler2l.width' must be an integer, got 'wide'"):
        load_config(write(tmp_path, "student:\n  mobiler2l:\n    width: wide\n"))
    with pytest.raises(ConfigError, match=r"'student.kind' must be one of 'mobiler2l' \| 'gridlf', got 'grid'"):
        load_config(write(tmp_path, "student: {kind: grid}\n"))
    with pytest.raises(ConfigError, match=r"'teacher.hash.n_levels' must be an integer"):
        load_config(write(tmp_path, "teacher:\n  hash: {n_levels: 1.5}\n"))
    with pytest.raises(ConfigError, match=r"'data.kind' must be one of 'auto' \| 'toy' \| 'blender' \| 'nerfstudio' "
                                          r"\| 'instant-ngp' \| 'colmap' \| 'llff', got 'photos'"):
        load_config(write(tmp_path, "data: {kind: photos}\n"))
    # an option that reads as a number in YAML (`scene_type: 360`) is the option
    assert load_config(write(tmp_path, "data: {scene_type: 360}\n")).data.scene_type == "360"
    with pytest.raises(ConfigError, match=r"'data.scene_type' must be one of .*, got 180"):
        load_config(write(tmp_path, "data: {scene_type: 180}\n"))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(write(tmp_path, "teacher: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_overrides(tmp_path):
    p = write(tmp_path, "name: x\n")
    cfg = load_config(p, ["teacher.steps=5", "student.mobiler2l.sr_channels=[8, 4]", "data.root=/some/where"])
    assert cfg.teacher.steps == 5 and cfg.student.arch.sr_channels == [8, 4] and cfg.data.root == "/some/where"
    with pytest.raises(ConfigError, match=r"unknown key 'teacher.setps'; did you mean 'steps'"):
        load_config(p, ["teacher.setps=5"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(p, ["teacher.steps"])
    with pytest.raises(ConfigError, match="cannot parse value"):
        load_config(p, ["teacher.aabb=[1, 2"])
    with pytest.raises(ConfigError, match="'teacher.steps' must be an integer"):
        load_config(p, ["teacher.steps=many"])


def test_range_checks(tmp_path):
    with pytest.raises(ConfigError, match="'student.mobiler2l.sr_channels' must be a list of 2"):
        load_config(write(tmp_path, "student: {mobiler2l: {sr_factor: 4, sr_channels: [8]}}\n"))
    with pytest.raises(ConfigError, match="'data.root' must be a scene folder"):
        load_config(write(tmp_path, "data: {kind: blender}\n"))
    with pytest.raises(ConfigError, match="'data.root' must be a scene folder when data.kind is 'colmap'"):
        load_config(write(tmp_path, "data: {kind: colmap}\n"))
    with pytest.raises(ConfigError, match="'data.max_size' must be >= 8, got 4"):
        load_config(write(tmp_path, "data: {max_size: 4}\n"))


@pytest.mark.parametrize("override, message", [
    # each check names its own key (student.width: 0 was once reported as student.n_points)
    ("student.mobiler2l.width=0", "'student.mobiler2l.width' must be >= 1, got 0"),
    ("student.mobiler2l.n_points=0", "'student.mobiler2l.n_points' must be >= 1, got 0"),
    ("student.mobiler2l.pe_freqs=-1", "'student.mobiler2l.pe_freqs' must be >= 0, got -1"),
    ("student.mobiler2l.sr_channels=[8, 0]", "'student.mobiler2l.sr_channels' must be channel counts >= 1"),
    ("student.mobiler2l.sr_factor=3", "'student.mobiler2l.sr_factor' must be a power of two, got 3"),
    ("student.output_size=66", "'student.output_size' must be a multiple of student.mobiler2l.sr_factor"),
    # these ended in ZeroDivisionError during training
    ("teacher.checkpoint_every=0", "'teacher.checkpoint_every' must be >= 1, got 0"),
    ("teacher.log_every=0", "'teacher.log_every' must be >= 1, got 0"),
    ("teacher.grid_update_every=0", "'teacher.grid_update_every' must be >= 1, got 0"),
    ("student.train.checkpoint_every=0", "'student.train.checkpoint_every' must be >= 1, got 0"),
    ("student.train.log_every=0", "'student.train.log_every' must be >= 1, got 0"),
    ("teacher.max_seconds=-5", r"'teacher.max_seconds' must be >= 0 \(0: no time budget\), got -5.0"),
    ("student.train.max_seconds=-1", "'student.train.max_seconds' must be >= 0"),
    ("teacher.lr=-0.01", "'teacher.lr' must be > 0, got -0.01"),
    ("student.train.lr=0", "'student.train.lr' must be > 0, got 0.0"),
    ("teacher.weight_decay=-1", "'teacher.weight_decay' must be >= 0"),
    ("student.train.batch_images=0", "'student.train.batch_images' must be >= 1, got 0"),
    ("teacher.init_batch_rays=0", "'teacher.init_batch_rays' must be >= 1"),
    ("teacher.max_batch_rays=0", "'teacher.max_batch_rays' must be >= 1"),
    ("distill.chunk_rays=0", "'distill.chunk_rays' must be >= 1"),
    ("teacher.eval_chunk_rays=0", "'teacher.eval_chunk_rays' must be >= 1"),
    ("teacher.alpha_thre=1", r"'teacher.alpha_thre' must be in \[0, 1\), got 1.0"),
    ("distill.jitter_fraction=1.5", r"'distill.jitter_fraction' must be in \[0, 1\], got 1.5"),
    ("distill.max_seconds=-1", r"'distill.max_seconds' must be >= 0 \(0: no time budget\), got -1"),
    ("student.train.real_fraction=-0.1", r"'student.train.real_fraction' must be in \[0, 1\]"),
    ("teacher.hash.max_resolution=8", r"'teacher.hash.max_resolution' must be >= teacher.hash.base_resolution"),
    ("teacher.hash.log2_table_size=40", r"'teacher.hash.log2_table_size' must be in \[1, 30\]"),
    ("student.near=-1", "'student.near' must be > 0 or null"),
    ("student.far=0", r"'student.far' must be > 0 or null \(derived\), got 0.0"),
    ("distill.seed=-1", "'distill.seed' must be >= 0"),
    ("data.toy.camera_angle_x=4", r"'data.toy.camera_angle_x' must be in \(0, pi\) radians"),
    ("data.toy.n_test=0", "'data.toy.n_test' must be >= 1"),
    ("export.check_poses=0", "'export.check_poses' must be >= 1"),
    ("export.max_abs_diff=0", "'export.max_abs_diff' must be > 0"),
])
def test_each_range_check_names_its_key(tmp_path, override, message):
    p = write(tmp_path, "name: x\n")
    load_config(p)  # the defaults pass
    with pytest.raises(ConfigError, match=message):
        load_config(p, [override])


def test_near_far_relation(tmp_path):
    p = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match=r"'student.far' must be > student.near, got 1.5"):
        load_config(p, ["student.near=2", "student.far=1.5"])
    cfg = load_config(p, ["student.near=2", "student.far=6"])
    assert (cfg.student.near, cfg.student.far) == (2.0, 6.0)


def test_rays_batches_need_a_per_ray_student(tmp_path):
    p = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match="'student.train.batch_mode' must be 'images' unless "
                                          "student.mobiler2l.upsample is 'pixelshuffle'"):
        load_config(p, ["student.train.batch_mode=rays"])
    assert load_config(p, ["student.train.batch_mode=rays", "student.mobiler2l.upsample=pixelshuffle"])


# ---------------------------------------------------------------------------
# documentation: every key has a meaning, and docs/CONFIG.md is generated from it


def _sections(cls=Config):
    yield cls
    for tp in typing.get_type_hints(cls).values():
        if dataclasses.is_dataclass(tp):
            yield from _sections(tp)


def test_every_key_and_section_is_documented():
    from pipeline.config_docs import entries

    rows = entries()
    assert len(rows) > 80
    undocumented = [key for key, _, _, meaning in rows if len(meaning) < 8]
    assert not undocumented, f"keys without a comment in pipeline/config.py: {undocumented}"
    assert all((cls.__doc__ or "").strip() and not cls.__doc__.startswith(cls.__name__ + "(")
               for cls in _sections()), "every config section needs a docstring"


def test_field_docs_reads_trailing_and_preceding_comments():
    """The parser itself: a missing comment is found, a comment above a field counts, and
    a trailing comment belongs to its own line only."""
    from pipeline.config_docs import field_docs

    source = (
        "class A:\n"
        "    a: int = 1  # the a, pixels\n"
        "    # the b, which needs\n"
        "    # two lines\n"
        "    b: float = 0.5\n"
        "    c: str = '#'\n"
        "\n"
        "    # a note about d and e\n"
        "\n"
        "    d: int = 2\n"
        "    e: list[int] = field(\n"
        "        default_factory=list)  # the e\n"
    )
    assert field_docs(source)["A"] == {"a": "the a, pixels", "b": "the b, which needs two lines", "c": "",
                                       "d": "", "e": "the e"}


def test_config_reference_is_up_to_date(capsys):
    """docs/CONFIG.md is `python -m pipeline config`; regenerate it with that command."""
    from pipeline.cli import main
    from pipeline.config_docs import reference

    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    assert printed == reference()
    assert (ROOT / "docs" / "CONFIG.md").read_text() == printed, \
        "docs/CONFIG.md is stale: run `python -m pipeline config > docs/CONFIG.md`"
    for key in ("teacher.compile", "student.kind", "student.mobiler2l.width", "student.train.lr", "data.toy.seed"):
        assert f"- `{key}` (" in printed


@pytest.mark.parametrize("override, message", [
    ("student.gridlf.n_points=0", "'student.gridlf.n_points' must be >= 1, got 0"),
    ("student.gridlf.window=0", "'student.gridlf.window' must be > 0, got 0.0"),
    ("student.gridlf.grid_resolutions=[]", "'student.gridlf.grid_resolutions' must be a list of one or more"),
    ("student.gridlf.grid_resolutions=[64, 1]", "'student.gridlf.grid_resolutions' must be a list of one or more"),
    ("student.gridlf.far_points=-1", "'student.gridlf.far_points' must be >= 0, got -1"),
    ("student.gridlf.far_resolutions=[1]", "'student.gridlf.far_resolutions' must be a list of one or more"),
    ("student.gridlf.march_stride=3", "'student.output_size' must be a multiple of student.gridlf.march_stride"),
    ("student.train.hard_fraction=2", r"'student.train.hard_fraction' must be in \[0, 1\]"),
    ("student.train.finetune_fraction=1", r"'student.train.finetune_fraction' must be in \[0, 1\)"),
    ("student.gridlf.surface_opacity=1", "'student.gridlf.surface_opacity' must be a number between 0 and 1"),
    ("student.kind=nerf", "'student.kind' must be one of 'mobiler2l' \\| 'gridlf', got 'nerf'"),
])
def test_gridlf_range_checks_name_their_key(tmp_path, override, message):
    p = write(tmp_path, "name: x\nstudent: {kind: gridlf, output_size: 64}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(p, [override])


@pytest.mark.parametrize("key, value", [("surface", "pixel"), ("features", "sparse"), ("refine", 4),
                                        ("ray_opacity", True)])
def test_removed_gridlf_options_are_named(tmp_path, key, value):
    """The variants that lost their rankings are gone; a config that still sets one is told so,
    in a file and with --set alike."""
    p = write(tmp_path, f"name: x\nstudent: {{kind: gridlf, output_size: 64, gridlf: {{{key}: {value}}}}}\n")
    with pytest.raises(ConfigError, match=f"'student.gridlf.{key}' was removed: .*docs/DESIGN.md.*; delete the key"):
        load_config(p)
    plain = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match=f"--set student.gridlf.{key}: .*was removed"):
        load_config(plain, [f"student.gridlf.{key}={value}"])


def test_student_kinds_come_from_the_registry():
    from pipeline.config import KINDS, StudentConfig, StudentKind

    assert typing.get_args(StudentKind) == tuple(KINDS)
    sections = {f.name for f in dataclasses.fields(StudentConfig)}
    assert set(KINDS) <= sections  # each kind has an architecture section of its name


def test_unselected_kind_is_not_range_checked(tmp_path):
    p = write(tmp_path, "name: x\n")  # kind mobiler2l: its section is checked, gridlf's is not
    assert load_config(p, ["student.gridlf.n_points=0"]).student.gridlf.n_points == 0


def test_a_capture_is_named_after_its_folder(tmp_path):
    capture = tmp_path / "configs" / "capture.yaml"
    capture.parent.mkdir()
    capture.write_text("data: {kind: auto, root: null}\n")
    assert load_config(capture).name == "capture"  # no capture yet: the config's name
    assert load_config(capture, ["data.root=/scans/my teapot (v2)"]).name == "my-teapot-v2"
    assert load_config(capture, ["data.root=/scans/teapot", "name=pot"]).name == "pot"  # an explicit name wins
    toy = tmp_path / "toy.yaml"
    toy.write_text("data: {kind: toy, root: /somewhere/else}\n")
    assert load_config(toy).name == "toy"
