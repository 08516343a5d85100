"""The folder format of the project's small measuring models (the ego-motion probe, the example detector):

    folder/config.json          {"kind": <the model's KIND>, **its config dataclass}
    folder/model.safetensors    its state dict
    folder/accuracy.json        optional: what its training measured on held-out data

A model class mixes in `SavedModel` and sets KIND, CONFIG (its config dataclass), NAME (for messages) and HOW_TO_GET
(the command that trains one, or where one ships).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ACCURACY_NAME = "accuracy.json"


class SavedModel:
    KIND: str
    CONFIG: type
    NAME: str
    HOW_TO_GET: str

    def save_pretrained(self, path: str | Path, accuracy: dict | None = None) -> None:
        """config.json + model.safetensors (+ accuracy.json: what its training measured on held-out data)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps({"kind": self.KIND, **asdict(self.config)}, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_NAME))
        if accuracy is not None:
            (path / ACCURACY_NAME).write_text(json.dumps(accuracy, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu"):
        """Load a model folder, in eval mode on `device`.

        Raises:
            FileNotFoundError: `path` lacks config.json or model.safetensors (the message says how to get one).
            ValueError: the folder holds another kind of model.
        """
        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"no {cls.NAME} at {path} (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                                    f"{cls.HOW_TO_GET}")
        raw = json.loads((path / CONFIG_NAME).read_text())
        if raw.pop("kind", None) != cls.KIND:
            raise ValueError(f"{path}/{CONFIG_NAME} is not the config of a {cls.NAME} (kind {cls.KIND!r}); "
                             f"{cls.HOW_TO_GET}")
        tuples = {f.name for f in fields(cls.CONFIG) if isinstance(f.default, tuple)}  # JSON lists back to tuples
        model = cls(cls.CONFIG(**{k: tuple(v) if k in tuples else v for k, v in raw.items()}))
        model.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
        return model.to(device).eval()

    @staticmethod
    def read_accuracy(path: str | Path) -> dict | None:
        file = Path(path) / ACCURACY_NAME
        return json.loads(file.read_text()) if file.is_file() else None
