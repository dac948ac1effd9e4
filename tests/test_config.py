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
    assert gpu.student.width == 256 and gpu.student.output_size == 800  # MobileR2L's size


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_full_path_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'teacher.stpes'; did you mean 'steps'\?"):
        load_config(write(tmp_path, "teacher:\n  stpes: 3\n"))


def test_wrong_type_names_full_path(tmp_path):
    with pytest.raises(ConfigError, match=r"'student.width' must be an integer, got 'wide'"):
        load_config(write(tmp_path, "student:\n  width: wide\n"))
    with pytest.raises(ConfigError, match=r"'teacher.hash.n_levels' must be an integer"):
        load_config(write(tmp_path, "teacher:\n  hash: {n_levels: 1.5}\n"))
    with pytest.raises(ConfigError, match=r"'data.kind' must be one of 'toy' \| 'blender'"):
        load_config(write(tmp_path, "data: {kind: colmap}\n"))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(write(tmp_path, "teacher: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_overrides(tmp_path):
    p = write(tmp_path, "name: x\n")
    cfg = load_config(p, ["teacher.steps=5", "student.sr_channels=[8, 4]", "data.root=/some/where"])
    assert cfg.teacher.steps == 5 and cfg.student.sr_channels == [8, 4] and cfg.data.root == "/some/where"
    with pytest.raises(ConfigError, match=r"unknown key 'teacher.setps'; did you mean 'steps'"):
        load_config(p, ["teacher.setps=5"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(p, ["teacher.steps"])
    with pytest.raises(ConfigError, match="cannot parse value"):
        load_config(p, ["teacher.aabb=[1, 2"])
    with pytest.raises(ConfigError, match="'teacher.steps' must be an integer"):
        load_config(p, ["teacher.steps=many"])


def test_range_checks(tmp_path):
    with pytest.raises(ConfigError, match="'student.sr_channels' must be a list of 2"):
        load_config(write(tmp_path, "student: {sr_factor: 4, sr_channels: [8]}\n"))
    with pytest.raises(ConfigError, match="'data.root' must be a scene folder"):
        load_config(write(tmp_path, "data: {kind: blender}\n"))
