"""Converters from the published pretrained files to our formats, without jax or flax (issue 5).

- `lwm`: LWM-Chat-1M's streaming msgpack checkpoint -> a `transformers` Llama folder with one merged vocabulary.
- `vqgan`: LWM's VQGAN parameter pickle (read by a restricted unpickler) -> a `diffusers.VQModel` folder;
  an aMUSEd `vqvae/` folder is taken as is.

Each runs once per download (`openvica convert ...`); everything after reads safetensors only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def check_writable(out: Path, overwrite: bool) -> None:
    """Refuse to write over a file or a non-empty folder (unless `overwrite`), before any slow work starts."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; choose a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder or pass overwrite=True")


@contextmanager
def writing_folder(out: Path, overwrite: bool):
    """Yield a temporary sibling of `out`, then move it into place: `out` is never left half-written."""
    check_writable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it 0o700
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
