"""The spec's clip query (spec `clips`): which clips of a clip source a scenario starts from, and where.

The query keeps clips whose attributes are in the `where` lists and whose ego motion over the window the scenario
uses (the seed frames and the horizon after them, [at, at + T + N)) lies in the ranges; unknown ego motion fails a
bounded range. Matches are sorted by clip id and cut at `limit`. The clips themselves (token stores, folders of
clips, the synthetic world) are read by `openvica_sim.data.clips`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openvica_sim.data.clips import ClipInfo

from .spec import Spec


# ---- the query ----------------------------------------------------------------------------------------------------

@dataclass
class Match:
    """A clip the query selected, with the frame its seed window starts at."""

    info: ClipInfo
    fork_frame: int

    @property
    def clip_id(self) -> str:
        return self.info.clip_id


def select(clips: list[ClipInfo], spec: Spec) -> list[Match]:
    """The clips that `spec.clips` selects, with their fork frame, first by clip id, at most `limit`."""
    q, T, N = spec.clips, spec.fork.seed_frames, spec.horizon
    matches = []
    for info in sorted(clips, key=lambda c: c.clip_id):
        if any(info.attributes.get(key) not in values for key, values in q.where.items()):
            continue
        if spec.fork.at in ("labelled", "auto"):
            at = labelled_fork(info, T)
            if at is None:
                if spec.fork.at == "labelled":
                    continue
                at = 0
        else:
            at = spec.fork.at
        if at < 0 or at + T > info.num_frames:
            continue
        stats = ego_stats(info, at, T + N)
        if all(_within(stats[name], getattr(q, name)) for name in stats):
            matches.append(Match(info, at))
        if q.limit is not None and len(matches) >= q.limit:
            break
    return matches


def labelled_fork(info: ClipInfo, T: int) -> int | None:
    """The first fork frame whose T seed frames all carry ground truth (tracking labels label every frame), else
    the one whose last seed frame is the first labelled frame (det_20's single frame: its boxes transfer); None when
    the clip has no labelled frame at T - 1 or later."""
    labelled = set(info.labelled_frames)
    fits = [f - T + 1 for f in sorted(labelled) if f - T + 1 >= 0]
    for at in fits:
        if all(at + k in labelled for k in range(T)):
            return at
    return fits[0] if fits else None


def ego_stats(info: ClipInfo, start: int, length: int) -> dict[str, float]:
    """Mean speed, mean |yaw rate| and strongest deceleration (m/s^2, braking positive, at the clip's own fps) over
    frames [start, start + length) of the clip (NaN when unknown)."""
    rows = slice(start, min(start + length, info.num_frames))
    speed, yaw = info.speed_mps[rows].astype(np.float64), info.yaw_rate_rps[rows].astype(np.float64)
    decel = -np.diff(speed) * info.fps
    with np.errstate(all="ignore"):
        return {"speed_mps": float(np.nanmean(speed)) if np.isfinite(speed).any() else math.nan,
                "abs_yaw_rate": float(np.nanmean(np.abs(yaw))) if np.isfinite(yaw).any() else math.nan,
                "decel_mps2": float(np.nanmax(decel)) if np.isfinite(decel).any() else math.nan}


def slice_counts(matches: list[Match]) -> list[dict]:
    """Matches per (weather, timeofday, scene), most first: the dry run's table."""
    from collections import Counter

    counts = Counter(tuple(m.info.attributes.get(k, "") for k in ("weather", "timeofday", "scene")) for m in matches)
    return [{"weather": w, "timeofday": t, "scene": s, "clips": n} for (w, t, s), n in counts.most_common()]


def _within(value: float, bounds) -> bool:
    low, high = bounds
    if low is None and high is None:
        return True
    if not math.isfinite(value):
        return False
    return (low is None or value >= low) and (high is None or value <= high)

