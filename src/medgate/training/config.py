"""The training config (TOML or JSON): what to train, on which data, and where the bundle goes.

Example (``medgate train cxr.toml``)::

    task = "classification"          # classification | segmentation | triage | tabular
    preset = "cxr_findings"          # labels, codes and preprocessing (training/presets.py)
    name = "cxr_classifier"
    version = "1.0.0"
    out = "models/cxr_classifier"    # the bundle directory written at the end
    run_dir = "runs/cxr_classifier"  # checkpoints + TensorBoard event files
    epochs = 10
    lr = 0.002
    [data]
    train = "data/train"             # labelled DICOM folders (datasets/folder.py) ...
    val = "data/val"
    [data.generate]                  # ... or phantoms generated into run_dir/data
    train = 2000
    val = 300
    [network]
    kind = "map_classifier"

Relative paths are relative to the working directory.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError


class GenerateSpec(BaseModel):
    """Phantom counts per split, for training without a prepared folder."""

    train: int = Field(0, ge=0)
    val: int = Field(0, ge=0)
    test: int = Field(0, ge=0)
    base: int = Field(0, ge=0, description="offset into each split's seed range")


class DataSpec(BaseModel):
    train: Path | None = None
    val: Path | None = None
    test: Path | None = None
    generate: GenerateSpec | None = None
    source: str | None = Field(None, description="what the data is, for the model card")


class NetworkSpec(BaseModel):
    kind: str = "map_classifier"
    args: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(BaseModel):
    """A validated training config for the imaging tasks."""

    task: Literal["classification", "segmentation"]
    preset: str
    name: str
    version: str = "1.0.0"
    description: str = ""
    out: Path
    run_dir: Path = Path("runs/train")
    data: DataSpec = Field(default_factory=DataSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    size: int = Field(128, ge=16, le=1024)
    epochs: int = Field(10, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    threads: int = Field(1, ge=1)
    resume: bool = True
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (tests)")
    demo: bool = True
    authors: str = "medgate contributors"
    onnx_opset: int = Field(17, ge=11)


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file as a dict: ``.json`` as JSON, anything else as TOML."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict) or "task" not in data:
        raise ValueError(f"{path}: a training config needs a 'task' key")
    return data


def parse_train_config(data: dict[str, Any]) -> TrainConfig:
    """Validate an imaging training config; ``ValueError`` names the first bad key."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"training config: invalid '{key}': {first['msg']}") from exc
