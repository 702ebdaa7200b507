"""Config loading: strict schemas, clear errors naming the file and the key."""

from __future__ import annotations

import pytest

from customer360.config import StrictModel, config_dir, load_config
from customer360.errors import ConfigError


class _Demo(StrictModel):
    horizon_days: int = 90
    name: str = "x"


def test_valid_file_parses(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("horizon_days: 30\n")
    assert load_config(path, _Demo).horizon_days == 30


def test_unknown_key_is_refused_with_the_key_named(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("horizon_dayz: 30\n")
    with pytest.raises(ConfigError, match=r"demo.yaml.*horizon_dayz"):
        load_config(path, _Demo)


def test_wrong_type_is_refused(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("horizon_days: soon\n")
    with pytest.raises(ConfigError, match="horizon_days"):
        load_config(path, _Demo)


def test_missing_and_broken_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(tmp_path))
    assert config_dir() == tmp_path
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("demo", _Demo)
    (tmp_path / "demo.yaml").write_text("horizon_days: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("demo", _Demo)


def test_packaged_configs_are_found_outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("CUSTOMER360_CONFIG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert (config_dir() / "__init__.py").is_file()
