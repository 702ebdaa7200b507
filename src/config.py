"""Loading YAML configs into strict pydantic models.

Each room declares the pydantic model of its own config (subclassing :class:`StrictModel`);
this module only finds and parses the files, so a typo in a YAML key fails loudly.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from customer360.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def config_dir() -> Path:
    """Folder holding the YAML configs.

    ``CUSTOMER360_CONFIG_DIR`` wins; otherwise ``configs/`` in the working directory; otherwise
    the configs shipped inside the package (``customer360.configs``, mapped from ``configs/``),
    so a wheel install works from any folder.
    """
    env = os.environ.get("CUSTOMER360_CONFIG_DIR")
    if env:
        return Path(env)
    cwd = Path.cwd() / "configs"
    if cwd.is_dir():
        return cwd
    return Path(str(resources.files("customer360.configs")))


def load_config(name_or_path: str | Path, model: type[ModelT]) -> ModelT:
    """Parse a YAML config into ``model``.

    Parameters
    ----------
    name_or_path
        A bare pipeline name (``"segments"`` -> ``configs/segments.yaml``) or a path to a file.
    model
        The pydantic model to validate against.

    Examples
    --------
    >>> from customer360.config import StrictModel, load_config
    >>> class Demo(StrictModel):
    ...     horizon_days: int = 90
    >>> Demo().horizon_days
    90
    """
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = config_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"Config file {path} does not exist. Create it, or point CUSTOMER360_CONFIG_DIR "
            "at the folder that holds the configs."
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"Config file {path} does not match its schema: {problems}") from exc
