"""Named models: which architecture, which weights file, which checksum; and loading.

The table of named models lives in ``weights/zoo.json`` (written by ``training/run.py``
when it ships a model): ``name.tag -> {kind, file, sha256, description}``. Each weights
file is a safetensors file whose metadata holds the architecture config, so a file is
self-describing and can also be loaded by path. A model card (JSON: training command,
data, metrics) sits beside each file with the same stem.

Nothing here unpickles: weights are read with safetensors only.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .models import PerceiverConfig, QualityPerceiver, Restorer, RestorerConfig

__all__ = [
    "WEIGHTS_DIR",
    "DEFAULT_RESTORER",
    "DEFAULT_PERCEIVER",
    "ModelEntry",
    "WeightsError",
    "list_models",
    "get_entry",
    "load_restorer",
    "load_perceiver",
    "load_model_card",
    "save_weights",
    "read_weights",
    "sha256sum",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ZOO_FILE = WEIGHTS_DIR / "zoo.json"
DEFAULT_RESTORER = "compact-allinone.v19"
DEFAULT_PERCEIVER = "tiny-clip-perceiver.v3"
FORMAT_VERSION = "1"

Kind = Literal["restorer", "perceiver"]


class WeightsError(ValueError):
    """A weights file is missing, corrupt, of the wrong kind or does not match its config."""


@dataclass(frozen=True)
class ModelEntry:
    """One row of the model table.

    Attributes
    ----------
    name : str
        ``name.tag``, e.g. ``"tiny-clip-perceiver.v3"``.
    kind : str
        ``"restorer"`` or ``"perceiver"``.
    file : str
        File name inside the package's ``weights/`` folder.
    sha256 : str
        Expected checksum of that file.
    description : str
        One line for listings.
    """

    name: str
    kind: Kind
    file: str
    sha256: str
    description: str = ""

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def available(self) -> bool:
        return self.path.is_file()


def _read_table() -> dict[str, ModelEntry]:
    if not ZOO_FILE.is_file():
        return {}
    with open(ZOO_FILE, encoding="utf-8") as handle:
        rows = json.load(handle)
    return {name: ModelEntry(name=name, **row) for name, row in rows.items()}


def list_models(kind: Kind | None = None) -> list[ModelEntry]:
    """Registered models (optionally of one kind), bundled or not (see ``entry.available``)."""
    return [e for e in _read_table().values() if kind is None or e.kind == kind]


def get_entry(name: str) -> ModelEntry:
    """The table row of ``name`` (``"default"`` is not resolved here).

    Raises
    ------
    KeyError
        Unknown name; the message lists the registered names and the closest spelling.
    """
    table = _read_table()
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown model {name!r}.{hint} Registered models: {sorted(table) or 'none'}")


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: str | os.PathLike, kind: Kind) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a perceive-ir safetensors file: its tensors and its architecture config.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    WeightsError
        Not a readable safetensors file (corrupt, truncated), not a perceive-ir file, or a
        file of another kind.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: '{path}'")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsError(f"cannot read weights file '{path}': {error} (corrupt or truncated safetensors file?)") from error
    file_kind = metadata.get("perceive_ir.kind")
    if file_kind is None or "perceive_ir.config" not in metadata:
        raise WeightsError(
            f"'{path}' is a safetensors file but not a perceive-ir model (no 'perceive_ir.kind'/'perceive_ir.config' metadata)"
        )
    if file_kind != kind:
        raise WeightsError(f"'{path}' holds a {file_kind}, expected a {kind}")
    try:
        config = json.loads(metadata["perceive_ir.config"])
    except json.JSONDecodeError as error:
        raise WeightsError(f"'{path}': unreadable architecture config in metadata: {error}") from error
    return tensors, config


def _resolve(name_or_path: str | os.PathLike, kind: Kind) -> Path:
    """Weights path of a registered name (checksum verified) or of a file path."""
    text = str(name_or_path)
    if text == "default":
        text = DEFAULT_RESTORER if kind == "restorer" else DEFAULT_PERCEIVER
    looks_like_path = os.sep in text or text.endswith(".safetensors") or Path(text).exists()
    if looks_like_path:
        return Path(text)
    entry = get_entry(text)
    if entry.kind != kind:
        raise WeightsError(f"model {entry.name!r} is a {entry.kind}, not a {kind}")
    if not entry.available:
        raise WeightsError(
            f"weights of {entry.name!r} are not bundled in this installation (expected '{entry.path}'); "
            f"train them with `python training/run.py --config compact` or pass a weights file path"
        )
    actual = sha256sum(entry.path)
    if actual != entry.sha256:
        raise WeightsError(
            f"checksum mismatch for '{entry.path}': expected sha256 {entry.sha256}, got {actual} "
            f"(the file is corrupt, truncated or was replaced)"
        )
    return entry.path


def _load_into(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected.keys() & tensors.keys()
        if tensors[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"shape mismatch {wrong[:3]}")
        raise WeightsError(f"weights in '{path}' do not match their config: " + "; ".join(parts))
    model.load_state_dict(tensors, strict=True)


def load_restorer(name_or_path: str | os.PathLike = "default", *, device: str | torch.device = "cpu") -> Restorer:
    """Load a restorer by registered name (``"default"`` is :data:`DEFAULT_RESTORER`) or file path.

    Returns the model in eval mode on ``device``.

    Raises
    ------
    KeyError
        Unknown model name.
    FileNotFoundError
        Missing weights file.
    WeightsError
        Checksum mismatch, corrupt file, wrong kind, or weights that do not fit the config.

    Examples
    --------
    >>> model = load_restorer("default")  # doctest: +SKIP
    """
    path = _resolve(name_or_path, "restorer")
    tensors, config = read_weights(path, "restorer")
    try:
        model = Restorer(RestorerConfig.from_dict(config))
    except (TypeError, ValueError) as error:
        raise WeightsError(f"'{path}': invalid restorer config: {error}") from error
    _load_into(model, tensors, path)
    return model.eval().to(device)


def load_perceiver(name_or_path: str | os.PathLike = "default", *, device: str | torch.device = "cpu") -> QualityPerceiver:
    """Load a quality perceiver by registered name or file path (eval mode, frozen).

    Raises the same errors as :func:`load_restorer`.
    """
    path = _resolve(name_or_path, "perceiver")
    tensors, config = read_weights(path, "perceiver")
    try:
        model = QualityPerceiver(PerceiverConfig.from_dict(config))
    except (TypeError, ValueError) as error:
        raise WeightsError(f"'{path}': invalid perceiver config: {error}") from error
    _load_into(model, tensors, path)
    return model.lock().to(device)


def load_model_card(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The model card (JSON beside the weights file), or ``{}`` when there is none."""
    text = str(name_or_path)
    if text == "default":
        text = DEFAULT_RESTORER
    path = Path(text) if (os.sep in text or text.endswith(".safetensors")) else get_entry(text).path
    card = path.with_suffix(".json")
    if not card.is_file():
        return {}
    with open(card, encoding="utf-8") as handle:
        return json.load(handle)


def save_weights(
    model: Restorer | QualityPerceiver,
    path: str | os.PathLike,
    *,
    card: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> str:
    """Write ``model`` as a self-describing safetensors file (atomically); returns its sha256.

    Parameters
    ----------
    model : Restorer or QualityPerceiver
        The model; its ``config`` goes into the file's metadata.
    path : path
        Output ``.safetensors`` file; a model card ``.json`` is written beside it when
        ``card`` is given.
    dtype : torch.dtype, optional
        Store floating tensors in this dtype (e.g. ``torch.float16`` to halve the size);
        loading casts back to the model's dtype.
    """
    from safetensors.torch import save_file

    kind = "restorer" if isinstance(model, Restorer) else "perceiver"
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    metadata = {
        "perceive_ir.kind": kind,
        "perceive_ir.config": json.dumps(model.config.to_dict()),
        "perceive_ir.format": FORMAT_VERSION,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; weights are package data, readable by all
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    if card is not None:
        card_path = path.with_suffix(".json")
        card_path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return sha256sum(path)


def register(name: str, kind: Kind, file: str, sha256: str, description: str = "") -> None:
    """Add or replace a row of ``weights/zoo.json`` (used by training when it ships a model)."""
    rows = {}
    if ZOO_FILE.is_file():
        rows = json.loads(ZOO_FILE.read_text(encoding="utf-8"))
    rows[name] = {"kind": kind, "file": file, "sha256": sha256, "description": description}
    ZOO_FILE.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", encoding="utf-8")
