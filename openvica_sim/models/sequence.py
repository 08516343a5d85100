"""The world model's sequence: where each id sits, and in which order a frame's codes are decoded.

One place owns the layout (docs/design.md "Ego conditioning"): the fixed prompt, then per frame

    [ego speed, ego yaw]   2 ids, action-conditioned bundles only (given, never predicted)
    h * w codes            raster order, row by row: vision id v of code v
    end-of-frame           forced, never sampled

so n' = h w + 1 (+ 2) ids per frame. The engine (`Simulator`), teacher-forced surprise (`metrics.surprise`), the
training loss mask (`training/wm.py`) and the bundle's `frame_length` all read it from here.

Decoding order. Raster decoding samples one code per forward. Wavefront (diagonal) decoding with width w starts row
r once row r - 1 has w codes: code (r, c) is sampled at step s(r, c) = r w + c, every active row advancing one code
per forward, so a frame takes 15 w + 16 forwards (w = 2: 46) instead of 256. Each code is still predicted by the
query at its raster predecessor's position, seeing every code sampled at an earlier step (`Wavefront.visible`); the
codes not yet sampled are masked explicitly, never read as zero-filled keys. Where the predecessor itself is not yet
sampled (the first code of rows 1..15 when w < 16, whose raster predecessor ends the row above), the query's input
is a stand-in: the previous frame's code at that position (46 % of the shipped clips' codes repeat the previous
frame's), placed at the predecessor's position and visible to no other query; the real code replaces it once
sampled. With w >= 16 every predecessor is sampled in time and the schedule is exactly raster order.

Dimensions: F frames, h x w codes per frame (grid x grid), n = h w codes, n' ids per frame, S steps per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

NUM_EGO_IDS = 2  # speed, yaw rate


@dataclass(frozen=True)
class SequenceLayout:
    """Where each id of a frame sits in the merged vocabulary and in the sequence."""

    text_vocab_size: int  # vision id v is text_vocab_size + v
    codebook_size: int  # K
    grid: int = 16  # codes per side
    action_conditioned: bool = False

    @classmethod
    def of(cls, config, grid: int, action_conditioned: bool) -> "SequenceLayout":
        """The layout of a `WorldModelConfig` with `grid` x `grid` codes per frame."""
        return cls(config.text_vocab_size, config.codebook_size, grid, action_conditioned)

    @property
    def tokens_per_frame(self) -> int:  # n = 256
        return self.grid * self.grid

    @property
    def num_ego_ids(self) -> int:
        return NUM_EGO_IDS if self.action_conditioned else 0

    @property
    def code_offset(self) -> int:
        """Index of a frame's first code within the frame: after its ego ids."""
        return self.num_ego_ids

    @property
    def frame_length(self) -> int:  # n' = 257, or 259 with ego ids
        return self.num_ego_ids + self.tokens_per_frame + 1

    @property
    def end_of_frame_id(self) -> int:
        return self.text_vocab_size + self.codebook_size

    def vision_id(self, v):
        return self.text_vocab_size + v

    def frame_ids(self, codes: torch.Tensor, ego_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (..., F, h, w) [+ ego vision ids (..., F, 2)] -> merged ids (..., F, n'). An action-conditioned layout
        without ego ids gets the "unknown" ids (`ActionCoding.unknown_ids`); other layouts ignore `ego_ids`."""
        flat = codes.reshape(*codes.shape[:-2], -1).long()  # (..., F, n)
        eof = torch.full((*flat.shape[:-1], 1), self.end_of_frame_id, dtype=torch.long, device=codes.device)
        parts = [self.vision_id(flat), eof]
        if self.action_conditioned:
            if ego_ids is None:
                from openvica_sim.actions import ActionCoding

                ego_ids = torch.as_tensor(ActionCoding(self.codebook_size).unknown_ids(tuple(flat.shape[:-1])),
                                          device=codes.device)
            parts.insert(0, self.vision_id(torch.as_tensor(ego_ids, device=codes.device).long()))
        return torch.cat(parts, dim=-1)

    def codes(self, frames: torch.Tensor) -> torch.Tensor:
        """The inverse of `frame_ids`: merged frames (..., F, n') -> codes (..., F, h, w)."""
        ids = frames[..., self.code_offset:self.code_offset + self.tokens_per_frame]
        return (ids - self.text_vocab_size).reshape(*ids.shape[:-1], self.grid, self.grid)

    def first_codes(self, num_frames: int, prompt_length: int) -> np.ndarray:
        """Sequence index of each frame's first code, for F frames after a prompt of `prompt_length` ids: (F,)."""
        return prompt_length + self.code_offset + self.frame_length * np.arange(num_frames)

    def code_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """True where a target id is a code (the training loss counts those only: prompt text is fixed, ego ids are
        given, end-of-frame is forced)."""
        first = self.vision_id(0)
        return (targets >= first) & (targets < first + self.codebook_size)

    def wavefront(self, width: int | None) -> "Wavefront":
        """The decoding schedule of a frame with wavefront `width` (None: raster)."""
        return Wavefront(self.grid, self.grid if width is None else width)


@dataclass(frozen=True)
class Wavefront:
    """Which codes of a frame are sampled at which of its S forwards (module docstring). Codes are raster indices
    j = r * grid + c; steps are 0 .. S - 1."""

    grid: int
    width: int

    def __post_init__(self):
        if self.width < 1:
            raise ValueError(f"wavefront width={self.width} must be at least 1 (row r starts once row r - 1 has "
                             f"that many codes; {self.grid} or more is raster order)")

    @property
    def raster(self) -> bool:
        return self.width >= self.grid

    @property
    def row_lag(self) -> int:
        """Steps between the starts of two rows: the width, at most a whole row."""
        return min(self.width, self.grid)

    @property
    def num_steps(self) -> int:
        """Forwards per frame: (grid - 1) w + grid; grid^2 for raster."""
        return (self.grid - 1) * self.row_lag + self.grid

    @cached_property
    def steps(self) -> np.ndarray:
        """s(j): the step at which code j is sampled, (n,) int."""
        j = np.arange(self.grid * self.grid)
        return (j // self.grid) * self.row_lag + j % self.grid

    def codes_at(self, step: int) -> np.ndarray:
        """Raster indices of the codes sampled at `step`, ascending."""
        return np.flatnonzero(self.steps == step)

    def needs_stand_in(self, j: int) -> bool:
        """Whether code j's raster predecessor is not yet sampled when j is: its query gets a stand-in."""
        return j > 0 and self.steps[j - 1] >= self.steps[j]

    @cached_property
    def feed_steps(self) -> np.ndarray:
        """When each code's own id enters the world model, (n,): the step after it was sampled (as the input of
        its successor's query, or alone, to write its keys and values); the last code enters with the next frame's
        first forward, at step S."""
        out = self.steps + 1
        out[-1] = self.num_steps
        return out

    def visible(self, query_feed_step: int, query_position: int) -> np.ndarray:
        """(n,) bool: the frame's codes whose ids a query fed at `query_feed_step` from raster position
        `query_position` (the index of the code whose slot it sits in) attends to: those fed at that step or
        earlier (a forward writes its inputs before attending) and not after it in raster order. The query's own
        slot comes on top of this when it holds a stand-in."""
        j = np.arange(self.grid * self.grid)
        return (self.feed_steps <= query_feed_step) & (j <= query_position)
