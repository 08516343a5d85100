"""openvica-sim: a learned driving simulator after OpenViCA (Möller et al.).

Two camera frames in, a driving video out, one frame every 0.25 s. The pieces, in the paper's terms:
tokenizer (TOK/DEC, `models/tokenizer.py`), world model (WM, `models/world_model.py`), video decoder
(VDEC, `models/video_decoder.py`), joined into a bundle (`bundle.py`) and run by the batched engine
(`simulator.py`).
"""

__version__ = "0.1.0"

# `import openvica_sim` makes gym.make("OpenViCA-v0") work (docs/design.md "Gymnasium 1.4"). This loads gymnasium
# (only it: the env classes load when an env is made); the core modules themselves import no edge library.
from .envs import register_envs as _register_envs  # noqa: E402

_register_envs()
