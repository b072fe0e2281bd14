"""Which data a checkpoint was trained on, and the check that an evaluation uses the same.

A checkpoint records `identity(config, data)`: the data's name, its path resolved to absolute
(built-in corpora and synthetic tasks keep their names) and its sha256. `data_of` loads that
data again and raises `DataMismatch` if its bytes changed; data named explicitly is used as
asked, with a warning when its hash differs from the training data's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data.sources import DataSource, data_for


class DataMismatch(ValueError):
    """The data found for a checkpoint is not the data it was trained on."""


def resolved(path: str | None) -> str | None:
    """A file path made absolute; None and `builtin:` / `synthetic:` names unchanged."""
    if path is None or path.startswith(("builtin:", "synthetic:")):
        return path
    return str(Path(path).resolve())


def identity(config: RunConfig, data: DataSource) -> dict[str, Any]:
    """{"name", "path", "sha256"} of the data a run trains on."""
    return {"name": data.name, "path": resolved(config.data.path), "sha256": data.sha256}


def training_data(config: RunConfig, recorded: dict[str, Any]) -> DataSource:
    """The data of a checkpoint's identity `recorded`; DataMismatch if its bytes changed."""
    data = data_for(config, recorded["path"])
    if data.sha256 != recorded["sha256"]:
        raise DataMismatch(
            f"the training data {recorded['path'] or data.name} has changed since training "
            f"(sha256 {data.sha256[:12]}, trained on {recorded['sha256'][:12]})"
        )
    return data


def data_of(
    config: RunConfig, recorded: dict[str, Any] | None, path: str | None = None
) -> tuple[DataSource, str | None]:
    """(data, warning): the training data of a checkpoint (`recorded`: its identity, None for an
    older checkpoint), or the data `path` names; the warning says when the hashes differ."""
    if recorded is None:
        return data_for(config, path), None
    if path is None:
        try:
            return training_data(config, recorded), None
        except DataMismatch as e:
            raise DataMismatch(f"{e}; name it with --data to use it anyway") from None
    data = data_for(config, path)
    if data.sha256 == recorded["sha256"]:
        return data, None
    return data, (
        f"warning: {path} (sha256 {data.sha256[:12]}) is not the training data "
        f"{recorded['path'] or recorded['name']} (sha256 {recorded['sha256'][:12]})"
    )
