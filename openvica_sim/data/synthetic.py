"""A synthetic driving world: procedural front-camera video with known ego motion and boxes.

A pinhole camera 1.4 m above a flat three-lane road looks down the middle lane. The road bends with
the ego path's curvature, dashed lane markings, poles and trees move towards the camera at the ego
speed, other cars drive in the lanes at their own speeds, and the sky, road and lighting change with
the time of day (day, dusk, night) and the weather (clear, rain, fog, snow). Every frame comes with
ground truth: the ego speed and yaw rate, and the 2D boxes of the visible cars in pixels. It is the
training data of the embedded default and the seed source of tests and demos, so everything runs
without BDD100K; `data/bdd_layout.py` writes it in BDD100K's folder layout.

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
class Drive:
    """Ego motion and world of one clip: start speed, acceleration (speed stops at 0), constant curvature."""

    speed_mps: float = 12.0
    yaw_rate_rps: float = 0.0  # at the start speed; the road's curvature is yaw_rate / max(speed, 1 m/s)
    timeofday: str = "day"  # one of PALETTES
    start_m: float = 0.0  # distance already driven: phase of the dashes and roadside objects
    accel_mps2: float = 0.0
    weather: str = "clear"  # one of WEATHERS
    num_cars: int = 3

    @property
    def curvature(self) -> float:
        """1/m, positive bending right."""
        return self.yaw_rate_rps / max(self.speed_mps, 1.0)

    def speed_at(self, t: np.ndarray) -> np.ndarray:
        """Ego speed (m/s) at times `t` (s)."""
        return np.maximum(self.speed_mps + self.accel_mps2 * np.asarray(t, np.float64), 0.0)

    def distance_at(self, t: np.ndarray) -> np.ndarray:
        """Metres driven since t = 0 at times `t` (s); braking stops at speed 0."""
        t = np.asarray(t, np.float64)
        if self.accel_mps2 < 0:
            t = np.minimum(t, self.speed_mps / -self.accel_mps2)
        return self.speed_mps * t + 0.5 * self.accel_mps2 * t ** 2


@dataclass
class SyntheticClip:
    """A rendered drive and its ground truth."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    boxes: list[list[dict]]  # per frame: {"category": "car", "box2d": {x1, y1, x2, y2}, "id"} of visible cars
    speed_mps: np.ndarray  # (T,)
    yaw_rate_rps: np.ndarray  # (T,) positive turning right
    attributes: dict = field(default_factory=dict)  # BDD100K {"weather", "timeofday", "scene"}


def render_drive(drive: Drive, num_frames: int, fps: float = 4.0, height: int = 256, width: int = 256,
                 rng_seed: int = 0, focal_px: float | None = None) -> SyntheticClip:
    """Render `drive`, one frame every 1/fps seconds; cars, rain and snow are drawn from `rng_seed`."""
    if drive.timeofday not in PALETTES:
        raise ValueError(f"timeofday={drive.timeofday!r}: choose one of {sorted(PALETTES)}")
    if drive.weather not in WEATHERS:
        raise ValueError(f"weather={drive.weather!r}: choose one of {list(WEATHERS)}")
    rng = np.random.default_rng(rng_seed)
    cars = _spawn_cars(drive, rng)
    camera = _Camera(focal_px or 0.8 * width, int(0.45 * height), height, width)
    t = np.arange(num_frames) / fps
    speed, travelled = drive.speed_at(t), drive.start_m + drive.distance_at(t)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    boxes = []
    for i in range(num_frames):
        frames[i], frame_boxes = _render_frame(drive, cars, t[i], travelled[i], camera, rng)
        boxes.append(frame_boxes)
    return SyntheticClip(frames, boxes, speed.astype(np.float32), (drive.curvature * speed).astype(np.float32),
                         {"weather": BDD_WEATHER[drive.weather], "timeofday": BDD_TIMEOFDAY[drive.timeofday],
                          "scene": "highway"})


def render_clip(drive: Drive, num_frames: int, fps: float = 4.0, height: int = 256, width: int = 256,
                focal_px: float | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of `drive`, one every 1/fps seconds (`render_drive` without ground truth)."""
    return render_drive(drive, num_frames, fps, height, width, rng_seed=0, focal_px=focal_px).frames


def random_drive(rng: np.random.Generator) -> Drive:
    """A drive with speed, curvature, time of day and weather drawn from `rng`."""
    speed, yaw_rate = float(rng.uniform(3, 30)), float(rng.normal(0, 0.08))
    timeofday = str(rng.choice(list(PALETTES), p=[0.6, 0.2, 0.2]))
    start_m = float(rng.uniform(0, 12))
    weather = str(rng.choice(WEATHERS, p=[0.55, 0.2, 0.1, 0.15]))
    return Drive(speed_mps=speed, yaw_rate_rps=yaw_rate, timeofday=timeofday, start_m=start_m,
                 accel_mps2=float(rng.uniform(-1.0, 1.0)), weather=weather, num_cars=int(rng.integers(0, 6)))


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


def _render_frame(drive: Drive, cars: list[dict], t: float, travelled_m: float, cam: _Camera,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    H, W, horizon = cam.H, cam.W, cam.horizon
    sky_top, sky_low, road, grass, marking, fog_colour = _colours(drive)
    img = np.empty((H, W, 3), np.float32)
    rows = np.arange(H, dtype=np.float32)[:, None]
    # sky: vertical gradient down to the horizon
    a = np.clip(rows[:horizon] / max(horizon, 1), 0, 1)[..., None]
    img[:horizon] = sky_top * (1 - a) + sky_low * a
    # ground: each row below the horizon sees the road at distance z = f * h / (row - horizon)
    z = cam.focal * CAMERA_HEIGHT_M / (rows[horizon:, 0] - horizon + 0.5)  # (Hg,) metres ahead
    path_x = 0.5 * drive.curvature * z ** 2  # lateral offset of the lane centre at z (circle, small angle)
    cols = np.arange(W, dtype=np.float32)[None, :] - W / 2 + 0.5
    x = np.abs(cols * z[:, None] / cam.focal - path_x[:, None])  # (Hg, W) lateral metres from the lane centre
    # markings: solid edges and dashed lane lines whose phase moves with the distance travelled
    width_m = 0.15
    edge = np.abs(x - 1.5 * LANE_WIDTH_M) < width_m
    dashes = ((z[:, None] + travelled_m) % (DASH_M + GAP_M)) < DASH_M
    lines = edge | ((np.abs(x - 0.5 * LANE_WIDTH_M) < width_m) & dashes)
    ground = np.where(lines[..., None], marking, np.where((x < 1.5 * LANE_WIDTH_M)[..., None], road, grass))
    if drive.timeofday == "night":  # headlights: the near road is lit
        light = np.clip(1.6 - z / 25.0, 0.3, 1.6)[:, None] * np.exp(-(x / 6.0) ** 2)
        ground *= np.maximum(light, 0.35)[..., None]
    if drive.weather == "rain":  # a wet road mirrors the sky a little
        ground += 0.15 * sky_low * (x < 1.5 * LANE_WIDTH_M)[..., None]
    fog = _fog(drive, z)[:, None, None].astype(np.float32)
    img[horizon:] = ground * (1 - fog) + fog_colour * fog
    boxes = _draw_objects(img, drive, cars, t, travelled_m, cam, fog_colour)
    if drive.weather == "rain":
        _rain(img, rng, fog_colour)
    elif drive.weather == "snow":
        _snow(img, rng, LIGHT[drive.timeofday])
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def _draw_objects(img: np.ndarray, drive: Drive, cars: list[dict], t: float, travelled_m: float, cam: _Camera,
                  fog_colour: np.ndarray) -> list[dict]:
    """Draw poles, trees and cars far to near (nearer ones occlude); return the visible cars' boxes."""
    objects = []  # (z, x centre, kind, payload)
    curvature = drive.curvature
    first = int(np.floor((travelled_m + NEAREST_M) / ROADSIDE_SPACING_M)) + 1
    for k in range(first, int((travelled_m + 120.0) / ROADSIDE_SPACING_M) + 1):
        z = k * ROADSIDE_SPACING_M - travelled_m
        side = 1.0 if k % 2 else -1.0
        objects.append((z, side * (1.5 * LANE_WIDTH_M + 2.5 + (k % 3)), "tree" if k % 3 == 0 else "pole", None))
    ego_driven = drive.distance_at(t)
    for car in cars:
        z = car["ahead"] + car["speed"] * t - ego_driven
        if car["lane"] == 0:
            z = max(z, 8.0)  # the car ahead in our lane keeps its distance
        objects.append((z, car["lane"] * LANE_WIDTH_M, "car", car))
    owner = np.full((cam.H, cam.W), -1, np.int32)  # which car each pixel shows
    drawn = {}
    night = drive.timeofday == "night"
    for z, x, kind, car in sorted(objects, key=lambda o: -o[0]):
        if not NEAREST_M < z < FARTHEST_M:
            continue
        x = x + 0.5 * curvature * z ** 2
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
            lit = min(1.0, max(0.25, 1.6 - z / 25.0)) if night and car["lane"] == 0 else 1.0
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
                drawn[car["id"]] = (x_left, y_top, x_right, y_bottom, clipped)
    boxes = []
    for car_id, (x1, y1, x2, y2, (r0, r1, c0, c1)) in sorted(drawn.items()):
        area = (r1 - r0) * (c1 - c0)
        if area < 4 or np.count_nonzero(owner[r0:r1, c0:c1] == car_id) < 0.2 * area:
            continue  # off screen, too small, or mostly hidden behind nearer cars
        box = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
        box = {k: float(np.clip(v, 0, (cam.W if k[0] == "x" else cam.H) - 1)) for k, v in box.items()}
        boxes.append({"category": "car", "box2d": box, "id": car_id})
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
