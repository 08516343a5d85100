"""A synthetic driving world: procedural front-camera video of a drivable ego, with its ground truth.

A three-lane road has its own geometry, a curvature that changes with the distance along it. The ego is a car on it
with a state relative to the road: the distance driven s, the lateral offset d from the middle lane's centre (+
right), the heading error psi against the road's direction (+ right) and the speed v. Each frame the state advances
by the ego's speed and yaw rate (substeps of 1/40 s): ds/dt = v cos psi, dd/dt = v sin psi, dpsi/dt = omega -
kappa(s) ds/dt. A pinhole camera 1.4 m above the road looks along the ego's heading, so a lane change shifts the lane
lines sideways, a swerve turns the whole road, braking slows the flow of dashes, poles and trees, and other cars
drive in their lanes at their own speeds. Sky, road and light follow the time of day (day, dusk, night) and the
weather (clear, rain, fog, snow).

Who steers. `render_drive` runs a driver: it keeps a target lane (with steering noise), follows a target speed with
bounded acceleration and executes the drive's manoeuvres (new target speeds, lane changes, yaw pulses: swerves).
`render_commands` instead applies given ego commands, one (speed, yaw rate) per frame, open loop: what an env action
means, and how a test shows what a command looks like.

Ground truth of every frame: the ego's speed and yaw rate (its mean motion over the frame step, as the token store
and the ego ids have it, docs/design.md "Ego conditioning"), lateral offset and heading error, and the 2D boxes of the
visible cars with their ids. It is the training data of the embedded default, the seed source of tests and demos,
and `data/bdd_layout.py` writes it in BDD100K's folder layout.

Dimensions: T frames, H x W pixels; frames are uint8 RGB (T, H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CAMERA_HEIGHT_M = 1.4
LANE_WIDTH_M = 3.6
DASH_M, GAP_M = 3.0, 9.0  # a common dashed-line rhythm
CAR_WIDTH_M, CAR_HEIGHT_M = 1.8, 1.5
NEAREST_M, FARTHEST_M = 2.0, 160.0  # objects outside this depth range are not drawn
ROADSIDE_SPACING_M = 18.0  # one pole or tree every so many metres, alternating sides
SUBSTEPS_PER_S = 40  # integration step of the ego's motion
ACCEL_MPS2, DECEL_MPS2 = 2.5, 6.0  # the driver's limits
STEER_GAIN, LANE_GAIN, MAX_HEADING_RAD = 2.5, 0.35, 0.12  # the lane keeper (see _driver_yaw_rate)
MAX_TURN_HEADING_RAD, MAX_TURN_LATERAL_MPS = 0.25, 3.0  # where the open-loop commands' turns stop: a heading
# against the road, and one that would cross it faster than this (`random_piecewise_commands`)
PALETTES = {  # sky top, sky horizon, road, grass, marking
    "day": ((90, 140, 220), (190, 215, 240), (95, 95, 100), (70, 130, 60), (235, 235, 235)),
    "dusk": ((60, 50, 110), (240, 150, 90), (70, 65, 70), (50, 80, 45), (210, 200, 180)),
    "night": ((5, 8, 20), (20, 25, 45), (25, 25, 30), (10, 18, 12), (160, 160, 140)),
}
WEATHERS = ("clear", "rain", "fog", "snow")
LIGHT = {"day": 1.0, "dusk": 0.65, "night": 0.12}  # scales the grey of fog, rain and snow
BDD_WEATHER = {"clear": "clear", "rain": "rainy", "fog": "foggy", "snow": "snowy"}  # BDD100K vocabularies
BDD_TIMEOFDAY = {"day": "daytime", "dusk": "dawn/dusk", "night": "night"}
CAR_COLOURS = ((170, 30, 30), (30, 60, 150), (200, 200, 205), (40, 40, 45), (120, 120, 125), (20, 100, 60))


@dataclass(frozen=True)
class Manoeuvre:
    """What the driver does from `t_s` on: "speed" (a new target speed, m/s), "lane" (a new target lateral offset,
    m, + right: +-3.6 is the next lane) or "yaw" (a yaw rate added for `duration_s`, rad/s: a swerve)."""

    t_s: float
    kind: str
    value: float
    duration_s: float = 0.0


@dataclass(frozen=True)
class Drive:
    """The world and the ego of one clip.

    Without `road` the road bends with the constant curvature yaw_rate_rps / speed_mps (a road that the ego, keeping
    its lane at the start speed, follows with exactly that yaw rate); `road` gives its own geometry, ((from_m,
    curvature per m), ...) piecewise constant, + bending right. Without speed manoeuvres the target speed is the
    start speed changed by accel_mps2 (stopping at 0).
    """

    speed_mps: float = 12.0
    yaw_rate_rps: float = 0.0
    timeofday: str = "day"  # one of PALETTES
    start_m: float = 0.0  # distance already driven: phase of the dashes and roadside objects
    accel_mps2: float = 0.0
    weather: str = "clear"  # one of WEATHERS
    num_cars: int = 3
    road: tuple[tuple[float, float], ...] | None = None
    lane_offset_m: float = 0.0  # the ego's start offset from the middle lane's centre, + right
    manoeuvres: tuple[Manoeuvre, ...] = ()
    steer_noise_rps: float = 0.0  # the driver's steering noise (std of a yaw rate redrawn each 0.25 s)

    @property
    def curvature(self) -> float:
        """The legacy road's constant curvature, 1/m, + bending right (when `road` is None)."""
        return self.yaw_rate_rps / max(self.speed_mps, 1.0)

    def curvature_at(self, s_m) -> np.ndarray:
        """The road's curvature (1/m) at distances s_m along it."""
        s_m = np.asarray(s_m, np.float64)
        if self.road is None:
            return np.full(s_m.shape, self.curvature)
        starts, values = np.array([r[0] for r in self.road]), np.array([r[1] for r in self.road])
        return values[np.clip(np.searchsorted(starts, s_m, side="right") - 1, 0, None)]

    def speed_at(self, t) -> np.ndarray:
        """The legacy target speed (m/s) at times `t` (s): start speed plus accel_mps2 t, not below 0."""
        return np.maximum(self.speed_mps + self.accel_mps2 * np.asarray(t, np.float64), 0.0)

    def distance_at(self, t) -> np.ndarray:
        """Metres the legacy target speed covers from t = 0 to `t` (s); braking stops at speed 0."""
        t = np.asarray(t, np.float64)
        if self.accel_mps2 < 0:
            t = np.minimum(t, self.speed_mps / -self.accel_mps2)
        return self.speed_mps * t + 0.5 * self.accel_mps2 * t ** 2


@dataclass
class EgoTrack:
    """The ego's state at each frame time and its mean motion over each frame step."""

    s_m: np.ndarray  # (T,) distance along the road
    lateral_m: np.ndarray  # (T,) offset from the middle lane's centre, + right
    heading_rad: np.ndarray  # (T,) heading error against the road, + right
    speed_mps: np.ndarray  # (T,) mean over (t - 1, t]; frame 0: its instantaneous value
    yaw_rate_rps: np.ndarray  # (T,)
    speed_now_mps: np.ndarray  # (T,) at the frame time itself (what a GPS sample there reads)
    yaw_rate_now_rps: np.ndarray  # (T,)


@dataclass
class SyntheticClip:
    """A rendered drive and its ground truth."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    boxes: list[list[dict]]  # per frame: {"category": "car", "box2d": {x1, y1, x2, y2}, "id", "distance_m"} of
    # the visible cars (distance_m: depth ahead of the camera)
    speed_mps: np.ndarray  # (T,) float32
    yaw_rate_rps: np.ndarray  # (T,) float32, positive turning right
    attributes: dict = field(default_factory=dict)  # BDD100K {"weather", "timeofday", "scene"}
    lateral_m: np.ndarray | None = None  # (T,) float32 offset from the middle lane's centre, + right
    heading_rad: np.ndarray | None = None  # (T,) float32 heading error against the road, + right
    track: EgoTrack | None = None  # the ego's whole state, float64 (instantaneous speed and yaw rate too)


def render_drive(drive: Drive, num_frames: int, fps: float = 4.0, height: int = 256, width: int = 256,
                 rng_seed: int = 0, focal_px: float | None = None) -> SyntheticClip:
    """Render `drive` with its driver, one frame every 1/fps seconds; cars, noise, rain and snow from `rng_seed`."""
    rng = np.random.default_rng(rng_seed)
    cars = _spawn_cars(drive, rng)
    track = _driven_track(drive, num_frames, fps, rng)
    return _render(drive, track, cars, fps, height, width, focal_px, rng)


def drive_track(drive: Drive, num_frames: int, fps: float = 4.0, rng_seed: int = 0) -> EgoTrack:
    """The ego's track of `render_drive(drive, num_frames, fps, rng_seed=rng_seed)` without the pictures; a longer
    one begins as the shorter one does (the GPS log of a video lasting to the end of its last frame step)."""
    rng = np.random.default_rng(rng_seed)
    _spawn_cars(drive, rng)  # the same draws as render_drive, in the same order
    return _driven_track(drive, num_frames, fps, rng)


def _driven_track(drive: Drive, num_frames: int, fps: float, rng: np.random.Generator) -> EgoTrack:
    # the steering noise, redrawn each 0.25 s; a longer clip draws more, after the same first ones
    noise = rng.normal(0.0, drive.steer_noise_rps, int(np.ceil(num_frames / fps * 4)) + 2)

    def command(t: float, state, dt: float) -> tuple[float, float]:
        v, w = _driver_command(drive, t, state, dt)
        return v, w + noise[int(t * 4)]

    return _simulate(drive, num_frames, fps, command)


def render_commands(drive: Drive, speed_mps, yaw_rate_rps, fps: float = 4.0, height: int = 256, width: int = 256,
                    rng_seed: int = 0, focal_px: float | None = None) -> SyntheticClip:
    """Render `drive` with the ego applying N given commands open loop (speed m/s and yaw rate rad/s, (N,) each):
    N + 1 frames, frame 0 at the drive's start and frame k after command k - 1 held over the step before it (so
    frame k's ground truth is command k - 1: the env's action of one step, on the frame it leads to)."""
    speed, yaw = np.asarray(speed_mps, np.float64), np.asarray(yaw_rate_rps, np.float64)
    if speed.shape != yaw.shape or speed.ndim != 1:
        raise ValueError(f"speed_mps and yaw_rate_rps must be one value per step (N,), got {speed.shape} and "
                         f"{yaw.shape}")
    rng = np.random.default_rng(rng_seed)
    cars = _spawn_cars(drive, rng)

    def command(t: float, state, dt: float) -> tuple[float, float]:
        k = min(max(int(np.ceil(t * fps - 1e-9)) - 1, 0), len(speed) - 1)  # the step (k, k + 1] that t lies in
        return float(speed[k]), float(yaw[k])

    track = _simulate(drive, len(speed) + 1, fps, command)
    return _render(drive, track, cars, fps, height, width, focal_px, rng)


def render_clip(drive: Drive, num_frames: int, fps: float = 4.0, height: int = 256, width: int = 256,
                focal_px: float | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of `drive`, one every 1/fps seconds (`render_drive` without ground truth)."""
    return render_drive(drive, num_frames, fps, height, width, rng_seed=0, focal_px=focal_px).frames


def random_drive(rng: np.random.Generator) -> Drive:
    """A drive with speed, curvature, time of day and weather drawn from `rng`: a lane keeper on a road of constant
    bend at a slowly changing speed (the world of the first embedded default)."""
    speed, yaw_rate = float(rng.uniform(3, 30)), float(rng.normal(0, 0.08))
    timeofday = str(rng.choice(list(PALETTES), p=[0.6, 0.2, 0.2]))
    start_m = float(rng.uniform(0, 12))
    weather = str(rng.choice(WEATHERS, p=[0.55, 0.2, 0.1, 0.15]))
    return Drive(speed_mps=speed, yaw_rate_rps=yaw_rate, timeofday=timeofday, start_m=start_m,
                 accel_mps2=float(rng.uniform(-1.0, 1.0)), weather=weather, num_cars=int(rng.integers(0, 6)))


def random_commanded_drive(rng: np.random.Generator, seconds: float = 10.0) -> Drive:
    """A drive whose ego does something: a road with bends that change along it, a noisy lane keeper, and over
    `seconds` a random schedule of new target speeds (stops among them), lane changes and swerves."""
    base = random_drive(rng)
    bends, s = [], 0.0
    while s < 40.0 * seconds + FARTHEST_M:  # enough road for 40 m/s plus what the camera sees ahead
        bends.append((s, float(rng.choice([0.0, rng.normal(0, 0.006)], p=[0.4, 0.6]))))
        s += float(rng.uniform(60, 200))
    manoeuvres, t = [], float(rng.uniform(0.5, 2.5))
    lane = float(rng.choice([-LANE_WIDTH_M, 0.0, LANE_WIDTH_M]))
    while t < seconds:
        kind = str(rng.choice(["speed", "lane", "yaw"], p=[0.5, 0.3, 0.2]))
        if kind == "speed":
            value = 0.0 if rng.random() < 0.15 else float(rng.uniform(2, 30))
            manoeuvres.append(Manoeuvre(t, "speed", value))
        elif kind == "lane":
            options = [x for x in (lane - LANE_WIDTH_M, lane + LANE_WIDTH_M) if abs(x) <= LANE_WIDTH_M + 1e-6]
            lane = float(rng.choice(options))
            manoeuvres.append(Manoeuvre(t, "lane", lane))
        else:
            manoeuvres.append(Manoeuvre(t, "yaw", float(rng.choice([-1, 1]) * rng.uniform(0.1, 0.3)),
                                        float(rng.uniform(0.3, 1.0))))
        t += float(rng.uniform(1.0, 3.5))
    start_lane = float(rng.choice([-LANE_WIDTH_M, 0.0, LANE_WIDTH_M]))
    return Drive(speed_mps=base.speed_mps, timeofday=base.timeofday, start_m=base.start_m, weather=base.weather,
                 num_cars=base.num_cars, road=tuple(bends), lane_offset_m=start_lane,
                 manoeuvres=((Manoeuvre(0.0, "lane", start_lane),) + tuple(manoeuvres)),
                 steer_noise_rps=float(rng.uniform(0.0, 0.02)))


def random_piecewise_commands(rng: np.random.Generator, drive: Drive, num_steps: int, fps: float = 4.0
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Open-loop ego commands (speed m/s, yaw rate rad/s; (num_steps,) each, for `render_commands`) that no lane
    keeper smooths: segments of 0.5 to 2.5 s, each holding, braking (2 to 6 m/s^2) or speeding up (1 to 2.5 m/s^2)
    and following the road's bend or turning off it at 0.05 to 0.3 rad/s. What such a command does shows in the very
    next frame and no frame before it tells: the frames a world model learns its commands from (the counterfactual
    branches of `metrics.ego` turn at 0.3 rad/s and brake at 4 m/s^2). Turns mostly head back toward the road when
    the ego would be off it within 2 s, and stop at a heading of MAX_TURN_HEADING_RAD against it, less at speed
    (MAX_TURN_LATERAL_MPS across it)."""
    dt = 1.0 / fps
    speed, yaw = np.zeros(num_steps), np.zeros(num_steps)
    v, s, k = float(drive.speed_mps), float(drive.start_m), 0
    psi, d = 0.0, float(drive.lane_offset_m)  # heading against the road and offset, as `_simulate` integrates them
    while k < num_steps:
        steps = max(1, int(round(rng.uniform(0.5, 2.5) * fps)))
        kind = str(rng.choice(["hold", "brake", "speed up"], p=[0.4, 0.3, 0.3]))
        rate = {"hold": 0.0, "brake": -rng.uniform(2.0, 6.0), "speed up": rng.uniform(1.0, 2.5)}[kind]
        turn = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.05, 0.3))
        aim = d + 2.0 * max(v, 2.0) * np.sin(psi)  # where the ego will be in 2 s
        back = abs(aim) > LANE_WIDTH_M and rng.random() < 0.8
        turn *= -np.sign(aim) if back else float(rng.choice([-1, 1]))
        for _ in range(min(steps, num_steps - k)):
            v_next = float(np.clip(v + rate * dt, 0.0, 30.0))
            speed[k] = (v + v_next) / 2  # held over the step: the ground truth of the frame it leads to
            limit = min(MAX_TURN_HEADING_RAD, MAX_TURN_LATERAL_MPS / max(speed[k], 1.0))
            w = turn if abs(psi + turn * dt) <= limit else 0.0
            yaw[k] = float(drive.curvature_at(s)) * speed[k] + w
            s += speed[k] * np.cos(psi) * dt
            d += speed[k] * np.sin(psi) * dt
            psi += w * dt
            v, k = v_next, k + 1
    return speed, yaw


# ---- the ego's motion -----------------------------------------------------------------------------------------------

@dataclass
class _State:
    s: float
    d: float
    psi: float
    v: float


def _simulate(drive: Drive, num_frames: int, fps: float, command) -> EgoTrack:
    """Integrate the ego's state under `command(t, state, dt) -> (speed, yaw rate)`; states at frame times, frame 0 at
    the start keeping its lane (yaw rate = the road's curvature x speed)."""
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"num_frames={num_frames} must be >= 1 and fps={fps} > 0")
    substeps = max(1, int(round(SUBSTEPS_PER_S / fps)))
    dt = 1.0 / (fps * substeps)
    state = _State(drive.start_m, drive.lane_offset_m, 0.0, float(drive.speed_mps))
    out = {k: np.zeros(num_frames) for k in ("s", "d", "psi", "v", "w", "v_now", "w_now")}
    out["s"][0], out["d"][0], out["v"][0] = state.s, state.d, state.v
    out["w"][0] = float(drive.curvature_at(state.s)) * state.v
    out["v_now"][0], out["w_now"][0] = out["v"][0], out["w"][0]
    for k in range(1, num_frames):
        moved, turned = 0.0, 0.0
        for i in range(substeps):
            t = (k - 1) / fps + i * dt
            v, w = command(t + dt, state, dt)
            kappa = float(drive.curvature_at(state.s))
            ds = v * np.cos(state.psi) * dt
            state.s += ds
            state.d += v * np.sin(state.psi) * dt
            state.psi += w * dt - kappa * ds
            state.v = v
            moved += v * dt
            turned += w * dt
        out["s"][k], out["d"][k], out["psi"][k] = state.s, state.d, state.psi
        out["v"][k], out["w"][k] = moved * fps, turned * fps
        out["v_now"][k], out["w_now"][k] = v, w
    return EgoTrack(out["s"], out["d"], out["psi"], out["v"], out["w"], out["v_now"], out["w_now"])


def _driver_command(drive: Drive, t: float, state: _State, dt: float) -> tuple[float, float]:
    """The driver: speed toward its target within the acceleration limits, yaw rate that follows the road's bend and
    steers toward the target lane (heading toward it at most MAX_HEADING_RAD), plus any yaw pulse under way (its
    steering noise is added by `render_drive`)."""
    target_speed, target_lane, pulse = None, drive.lane_offset_m, 0.0
    for m in drive.manoeuvres:
        if m.t_s > t:
            break
        if m.kind == "speed":
            target_speed = m.value
        elif m.kind == "lane":
            target_lane = m.value
        elif m.kind == "yaw" and t < m.t_s + m.duration_s:
            pulse += m.value
    if target_speed is None:
        target_speed = float(drive.speed_at(t))
    v = float(np.clip(target_speed, state.v - DECEL_MPS2 * dt, state.v + ACCEL_MPS2 * dt))
    kappa = float(drive.curvature_at(state.s))
    want = float(np.clip(LANE_GAIN * (target_lane - state.d) / max(v, 2.0) * 4.0, -MAX_HEADING_RAD,
                         MAX_HEADING_RAD))
    return v, kappa * v + STEER_GAIN * (want - state.psi) + pulse


# ---- rendering ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Camera:
    focal: float
    horizon: int  # first ground row
    H: int
    W: int

    def column(self, x_m: float, z_m: float) -> float:
        """Pixel column (edge coordinate) of lateral offset x at depth z."""
        return self.W / 2 + self.focal * x_m / z_m

    def row(self, y_m: float, z_m: float) -> float:
        """Pixel row (edge coordinate) of a point y metres above the ground at depth z."""
        return self.horizon + self.focal * (CAMERA_HEIGHT_M - y_m) / z_m


def _render(drive: Drive, track: EgoTrack, cars: list[dict], fps: float, height: int, width: int,
            focal_px: float | None, rng: np.random.Generator) -> SyntheticClip:
    if drive.timeofday not in PALETTES:
        raise ValueError(f"timeofday={drive.timeofday!r}: choose one of {sorted(PALETTES)}")
    if drive.weather not in WEATHERS:
        raise ValueError(f"weather={drive.weather!r}: choose one of {list(WEATHERS)}")
    camera = _Camera(focal_px or 0.8 * width, int(0.45 * height), height, width)
    T = len(track.s_m)
    frames = np.empty((T, height, width, 3), np.uint8)
    boxes = []
    for i in range(T):
        frames[i], frame_boxes = _render_frame(drive, cars, i / fps, track, i, camera, rng)
        boxes.append(frame_boxes)
    return SyntheticClip(frames, boxes, track.speed_mps.astype(np.float32), track.yaw_rate_rps.astype(np.float32),
                         {"weather": BDD_WEATHER[drive.weather], "timeofday": BDD_TIMEOFDAY[drive.timeofday],
                          "scene": "highway"}, track.lateral_m.astype(np.float32), track.heading_rad.astype(np.float32),
                         track)


def _road_centre(drive: Drive, s: float, d: float, psi: float, z: np.ndarray) -> np.ndarray:
    """Lateral position (camera frame, + right) of the middle lane's centre at depths z ahead of the ego at state
    (s, d, psi): -d plus the integral of the road's heading relative to the ego's (small angles)."""
    if drive.road is None and d == 0.0 and psi == 0.0:
        return 0.5 * drive.curvature * z ** 2  # the legacy road, exactly
    grid = np.arange(0.0, FARTHEST_M + 1.0, 0.5)
    heading = -psi + np.concatenate([[0.0], np.cumsum(drive.curvature_at(s + grid[:-1]) * 0.5)])
    lateral = -d + np.concatenate([[0.0], np.cumsum(heading[:-1] * 0.5)])
    return np.interp(z, grid, lateral)


def _spawn_cars(drive: Drive, rng: np.random.Generator) -> list[dict]:
    """Cars: lane (-1, 0, 1), distance ahead at t = 0 (m), speed (m/s), colour."""
    cars = []
    for i in range(drive.num_cars):
        lane = int(rng.integers(-1, 2))
        ahead = float(rng.uniform(10, 90)) if lane == 0 else float(rng.uniform(-20, 100))
        speed = max(drive.speed_mps + float(rng.uniform(-4, 4)), 0.0) if drive.speed_mps > 0 else 0.0
        cars.append({"id": i, "lane": lane, "ahead": ahead, "speed": speed,
                     "colour": np.array(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))], np.float32)})
    return cars


def _fog(drive: Drive, z: np.ndarray) -> np.ndarray:
    """How much of the fog colour covers something z metres away, in [0, 1]."""
    if drive.weather == "fog":
        return 1.0 - np.exp(-np.asarray(z) / 20.0)
    return np.clip(np.asarray(z) / 120.0, 0, 1)  # the light haze of clear air


def _colours(drive: Drive) -> tuple[np.ndarray, ...]:
    """sky top, sky horizon, road, grass, marking, fog colour after the weather."""
    sky_top, sky_low, road, grass, marking = (np.array(c, np.float32) for c in PALETTES[drive.timeofday])
    light = LIGHT[drive.timeofday]
    grey, white = np.float32([150, 152, 158]) * light, np.float32([225, 228, 235]) * light
    fog_colour = sky_low
    if drive.weather == "rain":
        sky_top, sky_low = 0.4 * sky_top + 0.6 * grey * 0.8, 0.4 * sky_low + 0.6 * grey
        road, grass, marking = 0.6 * road, 0.8 * grass, 0.85 * marking  # wet, darker
        fog_colour = sky_low
    elif drive.weather == "fog":
        fog_colour = np.float32([185, 187, 190]) * light
        sky_top = sky_low = fog_colour
    elif drive.weather == "snow":
        sky_top, sky_low = 0.3 * sky_top + 0.7 * grey, 0.3 * sky_low + 0.7 * white
        road, grass = 0.6 * road + 0.4 * white, 0.15 * grass + 0.85 * white
        fog_colour = sky_low
    return sky_top, sky_low, road, grass, marking, fog_colour


def _render_frame(drive: Drive, cars: list[dict], t: float, track: EgoTrack, i: int, cam: _Camera,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    H, W, horizon = cam.H, cam.W, cam.horizon
    s, d, psi = float(track.s_m[i]), float(track.lateral_m[i]), float(track.heading_rad[i])
    sky_top, sky_low, road, grass, marking, fog_colour = _colours(drive)
    img = np.empty((H, W, 3), np.float32)
    rows = np.arange(H, dtype=np.float32)[:, None]
    # sky: vertical gradient down to the horizon
    a = np.clip(rows[:horizon] / max(horizon, 1), 0, 1)[..., None]
    img[:horizon] = sky_top * (1 - a) + sky_low * a
    # ground: each row below the horizon sees the road at distance z = f * h / (row - horizon)
    z = cam.focal * CAMERA_HEIGHT_M / (rows[horizon:, 0] - horizon + 0.5)  # (Hg,) metres ahead
    centre = _road_centre(drive, s, d, psi, z)  # lateral position of the middle lane's centre at z
    cols = np.arange(W, dtype=np.float32)[None, :] - W / 2 + 0.5
    x = np.abs(cols * z[:, None] / cam.focal - centre[:, None])  # (Hg, W) lateral metres from the centre line
    # markings: solid edges and dashed lane lines whose phase moves with the distance travelled
    width_m = 0.15
    edge = np.abs(x - 1.5 * LANE_WIDTH_M) < width_m
    dashes = ((z[:, None] + s) % (DASH_M + GAP_M)) < DASH_M
    lines = edge | ((np.abs(x - 0.5 * LANE_WIDTH_M) < width_m) & dashes)
    ground = np.where(lines[..., None], marking, np.where((x < 1.5 * LANE_WIDTH_M)[..., None], road, grass))
    if drive.timeofday == "night":  # headlights: the near road ahead of the ego is lit
        ahead = np.abs(cols * z[:, None] / cam.focal)  # lateral metres from the ego's own line
        light = np.clip(1.6 - z / 25.0, 0.3, 1.6)[:, None] * np.exp(-(ahead / 6.0) ** 2)
        ground *= np.maximum(light, 0.35)[..., None]
    if drive.weather == "rain":  # a wet road mirrors the sky a little
        ground += 0.15 * sky_low * (x < 1.5 * LANE_WIDTH_M)[..., None]
    fog = _fog(drive, z)[:, None, None].astype(np.float32)
    img[horizon:] = ground * (1 - fog) + fog_colour * fog
    boxes = _draw_objects(img, drive, cars, t, track, i, cam, fog_colour)
    if drive.weather == "rain":
        _rain(img, rng, fog_colour)
    elif drive.weather == "snow":
        _snow(img, rng, LIGHT[drive.timeofday])
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def _draw_objects(img: np.ndarray, drive: Drive, cars: list[dict], t: float, track: EgoTrack, i: int, cam: _Camera,
                  fog_colour: np.ndarray) -> list[dict]:
    """Draw poles, trees and cars far to near (nearer ones occlude); return the visible cars' boxes."""
    s, d, psi = float(track.s_m[i]), float(track.lateral_m[i]), float(track.heading_rad[i])
    objects = []  # (z, lateral offset from the middle lane's centre, kind, payload)
    first = int(np.floor((s + NEAREST_M) / ROADSIDE_SPACING_M)) + 1
    for k in range(first, int((s + 120.0) / ROADSIDE_SPACING_M) + 1):
        side = 1.0 if k % 2 else -1.0
        objects.append((k * ROADSIDE_SPACING_M - s, side * (1.5 * LANE_WIDTH_M + 2.5 + (k % 3)),
                        "tree" if k % 3 == 0 else "pole", None))
    ego_lane = int(np.clip(np.round(d / LANE_WIDTH_M), -1, 1))
    ego_driven = s - drive.start_m
    for car in cars:
        z = car["ahead"] + car["speed"] * t - ego_driven
        if car["lane"] == ego_lane and car["ahead"] > 0:
            z = max(z, 8.0)  # a car ahead in the ego's lane keeps its distance
        objects.append((z, car["lane"] * LANE_WIDTH_M, "car", car))
    depths = np.array([o[0] for o in objects], np.float64)
    centres = _road_centre(drive, s, d, psi, np.clip(depths, 0.0, FARTHEST_M)) if objects else depths
    owner = np.full((cam.H, cam.W), -1, np.int32)  # which car each pixel shows
    drawn = {}
    night = drive.timeofday == "night"
    for (z, offset, kind, car), centre in sorted(zip(objects, centres), key=lambda o: -o[0][0]):
        if not NEAREST_M < z < FARTHEST_M:
            continue
        x = centre + offset
        fog = float(_fog(drive, z))

        def rect(x1_m, x2_m, y1_m, y2_m, colour, _z=z, _x=x, _fog=fog):
            r = (cam.row(y2_m, _z), cam.row(y1_m, _z), cam.column(_x + x1_m, _z), cam.column(_x + x2_m, _z))
            r0, r1, c0, c1 = (int(round(min(max(v, 0), lim))) for v, lim in zip(r, (cam.H, cam.H, cam.W, cam.W)))
            if r1 > r0 and c1 > c0:
                img[r0:r1, c0:c1] = colour * (1 - _fog) + fog_colour * _fog
            return r, (r0, r1, c0, c1)

        if kind == "pole":
            rect(-0.12, 0.12, 0.0, 6.0, np.float32([110, 110, 115]) * LIGHT[drive.timeofday])
        elif kind == "tree":
            rect(-0.25, 0.25, 0.0, 2.5, np.float32([80, 55, 35]) * LIGHT[drive.timeofday])
            crown = (0.5 * np.float32([40, 100, 40]) + 0.5 * np.float32([220, 222, 228])
                     if drive.weather == "snow" else np.float32([40, 100, 40]))
            rect(-1.4, 1.4, 2.0, 6.0, crown * LIGHT[drive.timeofday])
        else:
            lit = min(1.0, max(0.25, 1.6 - z / 25.0)) if night and car["lane"] == ego_lane else 1.0
            body = car["colour"] * (0.55 if night else 0.85) * LIGHT[drive.timeofday] ** 0.5 * lit
            half = 0.5 * CAR_WIDTH_M
            exact, clipped = rect(-half, half, 0.25, CAR_HEIGHT_M, body)
            r0, r1, c0, c1 = clipped
            owner[r0:r1, c0:c1] = car["id"]
            rect(-half, half, 0.0, 0.3, np.float32([20, 20, 22]))  # shadow band and tyres
            rect(-half + 0.15, half - 0.15, 0.95, 1.4, np.float32([35, 45, 55]) * (0.5 if night else 1.0))
            tail = np.float32([255, 40, 30]) if night else np.float32([150, 25, 20])
            rect(-half + 0.05, -half + 0.4, 0.6, 0.8, tail)
            rect(half - 0.4, half - 0.05, 0.6, 0.8, tail)
            if fog < 0.85:  # boxes of cars the fog has hidden are no ground truth
                y_top, y_bottom, x_left, x_right = exact[0], cam.row(0.0, z), exact[2], exact[3]
                drawn[car["id"]] = (x_left, y_top, x_right, y_bottom, clipped, z)
    boxes = []
    for car_id, (x1, y1, x2, y2, (r0, r1, c0, c1), z) in sorted(drawn.items()):
        area = (r1 - r0) * (c1 - c0)
        if area < 4 or np.count_nonzero(owner[r0:r1, c0:c1] == car_id) < 0.2 * area:
            continue  # off screen, too small, or mostly hidden behind nearer cars
        box = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
        box = {k: float(np.clip(v, 0, (cam.W if k[0] == "x" else cam.H) - 1)) for k, v in box.items()}
        boxes.append({"category": "car", "box2d": box, "id": car_id, "distance_m": round(float(z), 2)})
    return boxes


def _rain(img: np.ndarray, rng: np.random.Generator, fog_colour: np.ndarray) -> None:
    """Slanted light streaks."""
    H, W = img.shape[:2]
    n, length = H * W // 700, max(3, H // 20)
    y0, x0 = rng.integers(0, H, n), rng.integers(0, W, n)
    steps = np.arange(length)
    ys, xs = y0[:, None] + steps, x0[:, None] + steps // 4
    keep = (ys < H) & (xs < W)
    ys, xs = ys[keep], xs[keep]
    img[ys, xs] = 0.5 * img[ys, xs] + 0.5 * (fog_colour * 0.5 + 110)


def _snow(img: np.ndarray, rng: np.random.Generator, light: float) -> None:
    """White flakes, bigger on bigger frames."""
    H, W = img.shape[:2]
    n, size = H * W // 350, max(1, H // 180)
    y0, x0 = rng.integers(0, H - size + 1, n), rng.integers(0, W - size + 1, n)
    flake = np.float32([245, 245, 250]) * max(light, 0.5)
    for dy in range(size):
        for dx in range(size):
            img[y0 + dy, x0 + dx] = flake
