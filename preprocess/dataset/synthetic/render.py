"""Draw animated dancers into frames, with exact COCO-17 ground truth.

A clip is a ``Scene``: dancers (body shape, colours, motion), a background texture, a camera path (zoom, pan),
an optional foreground occluder and a mirroring flag, all drawn from one seeded generator. ``render_clip`` yields
(frame, keypoints) per time step; the keypoints come from the same projected joints the drawing uses, and their
visibility comes from a part-label map drawn alongside the frame, so a keypoint hidden behind another dancer, behind
the occluder, or on the far side of the head is marked occluded (COCO v=1), and one outside the frame v=0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ...pose.keypoints import COCO_KEYPOINTS, flip_permutation
from .body import BodyShape, pose_joints
from .styles import SIGNATURES, DancerMotion, animate_scene

SHIFT = 4  # fixed-point bits for sub-pixel drawing
ONE = 1 << SHIFT

# Costume colours (BGR) per palette and role: (top, bottom, shoes, skirt or None).
PALETTES: dict[str, dict[str, list[tuple]]] = {
    "ballet": {
        "solo": [
            ((203, 192, 255), (220, 215, 250), (180, 170, 240), (235, 225, 255)),
            ((250, 250, 250), (235, 235, 245), (200, 200, 230), (255, 255, 255)),
            ((230, 200, 220), (225, 210, 240), (190, 170, 220), (240, 220, 235)),
        ],
    },
    "street": {
        "solo": [
            ((40, 40, 40), (130, 90, 50), (240, 240, 240), None),
            ((40, 40, 200), (90, 70, 50), (30, 30, 30), None),
            ((60, 120, 60), (50, 50, 50), (240, 240, 240), None),
            ((180, 110, 30), (60, 60, 80), (0, 200, 255), None),
        ],
    },
    "flamenco": {
        "solo": [
            ((30, 20, 200), (20, 20, 20), (20, 20, 20), (25, 15, 190)),
            ((20, 20, 20), (20, 20, 20), (20, 20, 20), (30, 30, 180)),
            ((40, 40, 170), (30, 30, 30), (20, 20, 20), (20, 20, 20)),
        ],
    },
    "ballroom": {
        "leader": [((25, 20, 20), (25, 20, 20), (10, 10, 10), None), ((60, 30, 20), (50, 25, 20), (10, 10, 10), None)],
        "follower": [
            ((160, 60, 150), (200, 180, 190), (120, 170, 210), (160, 60, 150)),
            ((70, 140, 30), (200, 190, 180), (120, 170, 210), (70, 140, 30)),
            ((140, 120, 230), (200, 180, 190), (120, 170, 210), (140, 120, 230)),
            ((200, 170, 80), (200, 190, 180), (120, 170, 210), (200, 170, 80)),
        ],
    },
    "social": {
        "leader": [
            ((30, 140, 240), (40, 40, 40), (30, 30, 30), None),
            ((180, 160, 20), (50, 40, 30), (30, 30, 30), None),
            ((40, 200, 230), (40, 40, 40), (30, 30, 30), None),
        ],
        "follower": [
            ((120, 40, 170), (190, 170, 160), (30, 30, 120), (120, 40, 170)),
            ((40, 180, 240), (190, 170, 160), (30, 30, 120), (40, 180, 240)),
            ((200, 200, 30), (190, 170, 160), (30, 30, 120), (200, 200, 30)),
        ],
    },
    "square": {
        "ring": [
            ((40, 40, 190), (140, 90, 40), (40, 60, 90), None),
            ((150, 80, 40), (140, 90, 40), (40, 60, 90), None),
            ((200, 220, 230), (150, 90, 40), (40, 60, 90), (50, 50, 200)),
            ((40, 40, 190), (200, 220, 230), (40, 60, 90), (150, 80, 40)),
        ],
    },
}

SKIN = [(180, 200, 240), (140, 170, 220), (100, 140, 195), (70, 100, 150), (50, 70, 110)]
HAIR = [(20, 20, 25), (30, 50, 90), (60, 110, 170), (40, 40, 40), (150, 190, 220)]

# Parts a dancer is drawn from, and which parts "own" each COCO keypoint for the visibility test.
PARTS = (
    "torso",
    "head",
    "l_upper_arm",
    "l_forearm",
    "r_upper_arm",
    "r_forearm",
    "l_thigh",
    "l_shin",
    "r_thigh",
    "r_shin",
    "l_foot",
    "r_foot",
    "neck",
    "skirt",
    "l_hand",
    "r_hand",
    "hair",
)
PART_INDEX = {name: i for i, name in enumerate(PARTS)}
LABELS_PER_DANCER = 20
OCCLUDER_LABEL = 255
KEYPOINT_OWNERS = {
    "nose": ("head",),
    "left_eye": ("head",),
    "right_eye": ("head",),
    "left_ear": ("head", "hair"),
    "right_ear": ("head", "hair"),
    "left_shoulder": ("torso", "l_upper_arm", "neck"),
    "right_shoulder": ("torso", "r_upper_arm", "neck"),
    "left_elbow": ("l_upper_arm", "l_forearm"),
    "right_elbow": ("r_upper_arm", "r_forearm"),
    "left_wrist": ("l_forearm", "l_hand"),
    "right_wrist": ("r_forearm", "r_hand"),
    "left_hip": ("torso", "l_thigh", "skirt"),
    "right_hip": ("torso", "r_thigh", "skirt"),
    "left_knee": ("l_thigh", "l_shin", "skirt"),
    "right_knee": ("r_thigh", "r_shin", "skirt"),
    "left_ankle": ("l_shin", "l_foot"),
    "right_ankle": ("r_shin", "r_foot"),
}


@dataclass
class Dancer:
    shape: BodyShape
    motion: DancerMotion
    skin: tuple
    hair: tuple
    top: tuple
    bottom: tuple
    shoes: tuple
    skirt: tuple | None
    long_hair: bool


@dataclass
class Scene:
    style: str
    width: int
    height: int
    fps: float
    times: np.ndarray
    dancers: list[Dancer]
    background: np.ndarray  # larger than the frame, panned and zoomed by the camera
    camera_x: np.ndarray  # (T,) metres
    zoom: np.ndarray  # (T,)
    mirrored: bool
    occluder: dict | None
    performer: int
    meta: dict = field(default_factory=dict)


def _jitter_colour(rng: np.random.Generator, colour: tuple, spread: int = 18) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in colour)


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A wall-and-floor texture from a shared pool (stripes, panels, bricks, gradient), any style can get any."""
    h, w = int(height * 1.3), int(width * 1.8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = np.array(rng.integers(40, 220, 3), dtype=np.float32)
    accent = np.array(rng.integers(40, 220, 3), dtype=np.float32)
    kind = rng.integers(0, 4)
    if kind == 0:  # vertical stripes
        period = rng.uniform(0.06, 0.2) * width
        mix = (np.sin(2 * np.pi * xx / period) > 0).astype(np.float32)
    elif kind == 1:  # panels with a gradient
        mix = ((xx // (width * rng.uniform(0.25, 0.5))) % 2) * 0.6 + yy / h * 0.4
    elif kind == 2:  # bricks
        bh = height * rng.uniform(0.05, 0.09)
        row = yy // bh
        bw = bh * 2.2
        mortar = ((yy % bh) < 1.2) | (((xx + (row % 2) * bw / 2) % bw) < 1.2)
        mix = np.where(mortar, 1.0, 0.15 * np.sin(row * 3.7 + (xx + (row % 2) * bw / 2) // bw * 1.3) ** 2)
    else:  # stage gradient with a spotlight
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.2, 0.5) * h
        mix = np.exp(-(((xx - cx) / (0.4 * w)) ** 2 + ((yy - cy) / (0.5 * h)) ** 2))
    image = wall[None, None] * (1 - mix[..., None]) + accent[None, None] * mix[..., None]
    # Floor below the horizon: planks or tiles in a darker floor colour.
    horizon = int(h * rng.uniform(0.55, 0.68))
    floor = np.array(rng.integers(30, 160, 3), dtype=np.float32)
    fy, fx = yy[horizon:], xx[horizon:]
    if rng.random() < 0.5:
        tile = (((fx // (width * 0.12)) + (fy // (height * 0.06))) % 2) * 0.25
    else:
        tile = ((fy // (height * 0.04)) % 2) * 0.12 + 0.05 * np.sin(fx / 7.0)
    image[horizon:] = floor[None, None] * (1 - tile[..., None]) + 255 * 0.1 * tile[..., None]
    image += rng.normal(0, 6, image.shape).astype(np.float32)  # sensor-like grain
    return np.clip(image, 0, 255).astype(np.uint8)


def make_scene(
    style: str,
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    fps: float,
    frames: int,
    performer_rng: np.random.Generator,
    performer: int,
    mirror_probability: float = 0.5,
    occluder_probability: float = 0.25,
) -> Scene:
    """Draw every random choice of one clip. ``performer_rng`` fixes body and skin so a performer recurs."""
    sig = SIGNATURES[style]
    times = np.arange(frames) / fps
    motions = animate_scene(sig, times, rng)
    lead_shape = BodyShape.sample(performer_rng)
    lead_skin = SKIN[performer_rng.integers(len(SKIN))]
    lead_hair = HAIR[performer_rng.integers(len(HAIR))]
    dancers = []
    palette = PALETTES[sig.palette]
    for i, motion in enumerate(motions):
        options = palette.get(motion.role) or palette[next(iter(palette))]
        top, bottom, shoes, skirt = options[rng.integers(len(options))]
        first = i == 0
        dancers.append(
            Dancer(
                shape=lead_shape if first else BodyShape.sample(rng),
                motion=motion,
                skin=_jitter_colour(rng, lead_skin if first else SKIN[rng.integers(len(SKIN))], 8),
                hair=lead_hair if first else HAIR[rng.integers(len(HAIR))],
                top=_jitter_colour(rng, top),
                bottom=_jitter_colour(rng, bottom),
                shoes=_jitter_colour(rng, shoes, 10),
                skirt=None if skirt is None else _jitter_colour(rng, skirt),
                long_hair=skirt is not None,
            )
        )
    # Camera: follows the dancers' centre with a lag, plus a slow pan drift; zoom breathes slowly.
    centres = np.mean([m.root_xz[:, 0] for m in motions], axis=0)
    lag = max(1, int(fps * 0.5))
    kernel = np.ones(lag) / lag
    follow = np.convolve(np.pad(centres, (lag - 1, 0), mode="edge"), kernel, mode="valid")
    camera_x = follow + rng.uniform(-0.25, 0.25) + rng.uniform(-0.1, 0.1) * times
    zoom = rng.uniform(0.9, 1.1) * (1 + rng.uniform(0, 0.08) * np.sin(2 * np.pi * times / rng.uniform(3, 7)))
    if sig.dancers >= 4:
        zoom = zoom * 0.85
    occluder = None
    if rng.random() < occluder_probability:
        ow = rng.uniform(0.08, 0.16) * width
        ox = rng.uniform(0.05, 0.95) * width
        occluder = {
            "x0": float(ox - ow / 2),
            "x1": float(ox + ow / 2),
            "y0": float(rng.uniform(0.35, 0.75) * height),
            "y1": float(height + 1),
            "colour": tuple(int(c) for c in rng.integers(20, 200, 3)),
        }
    return Scene(
        style=style,
        width=width,
        height=height,
        fps=fps,
        times=times,
        dancers=dancers,
        background=make_background(rng, width, height),
        camera_x=camera_x,
        zoom=zoom,
        mirrored=bool(rng.random() < mirror_probability),
        occluder=occluder,
        performer=performer,
        meta={
            "tempo_bpm": round(motions[0].tempo_bpm, 2),
            "dancers": sig.dancers,
            "hold": sig.hold,
            "palette": sig.palette,
        },
    )


class _Projector:
    """Weak-perspective pinhole camera 5 m from the stage centre, at chest height, zoomed so a 1.75 m dancer at
    the centre fills ~72 % of the frame height."""

    distance = 5.0
    height_m = 0.88

    def __init__(self, scene: Scene):
        self.scene = scene
        self.focal = 0.72 * scene.height * self.distance / 1.75

    def __call__(self, points: np.ndarray, step: int) -> np.ndarray:
        s = self.scene
        depth = self.distance - points[..., 2]
        scale = self.focal * s.zoom[step] / depth
        u = s.width / 2 + (points[..., 0] - s.camera_x[step]) * scale
        v = s.height * 0.52 - (points[..., 1] - self.height_m) * scale
        return np.stack([u, v], axis=-1)

    def metres_to_pixels(self, step: int, z: float = 0.0) -> float:
        return self.focal * self.scene.zoom[step] / (self.distance - z)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * ONE).astype(np.int32)


def _draw_limb(images, values, p0, p1, w0, w1):
    """A tapered limb (quad + round caps) into every (image, value) pair."""
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-6)
    quad = _fixed(np.array([p0 + n * w0, p1 + n * w1, p1 - n * w1, p0 - n * w0]))
    for image, value, aa in zip(images, values, (cv2.LINE_AA, cv2.LINE_8)):
        cv2.fillConvexPoly(image, quad, value, aa, SHIFT)
        cv2.circle(image, tuple(_fixed(p0)), int(w0 * ONE), value, -1, aa, SHIFT)
        cv2.circle(image, tuple(_fixed(p1)), int(w1 * ONE), value, -1, aa, SHIFT)


def _draw_poly(images, values, points):
    pts = _fixed(points)
    for image, value, aa in zip(images, values, (cv2.LINE_AA, cv2.LINE_8)):
        cv2.fillConvexPoly(image, pts, value, aa, SHIFT)


def _draw_ellipse(images, values, centre, axes, angle):
    c = tuple(int(v) for v in _fixed(centre))
    ax = tuple(max(1, int(a * ONE)) for a in axes)
    for image, value, aa in zip(images, values, (cv2.LINE_AA, cv2.LINE_8)):
        cv2.ellipse(image, c, ax, float(angle), 0, 360, value, -1, aa, SHIFT)


def _shade(colour: tuple, factor: float) -> tuple:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _dancer_parts(dancer: Dancer, joints: dict, uv: dict, px_per_m: float, index: int, camera_dir: np.ndarray):
    """(depth, draw function) for each part of one dancer at one frame; larger depth is nearer the camera."""
    sh = dancer.shape
    label0 = index * LABELS_PER_DANCER + 1
    parts = []

    def z(*names):
        return float(np.mean([joints[n][2] for n in names]))

    def limb(part, a, b, w0, w1, colour, depth_bias=0.0):
        p0, p1 = uv[a], uv[b]
        parts.append(
            (z(a, b) + depth_bias, lambda imgs: _draw_limb(imgs, (colour, label0 + PART_INDEX[part]), p0, p1, w0, w1))
        )

    w = sh.limb_width * px_per_m
    facing_away = float(np.dot(joints["face_forward"], camera_dir)) < 0
    # Arms and legs, each side's limbs coloured slightly differently in depth shading (the far side darker).
    for side, s in (("left", "l"), ("right", "r")):
        far = z(f"{side}_shoulder") < z("neck")
        k = 0.8 if far else 1.0
        limb(f"{s}_upper_arm", f"{side}_shoulder", f"{side}_elbow", 0.62 * w, 0.52 * w, _shade(dancer.top, k))
        limb(f"{s}_forearm", f"{side}_elbow", f"{side}_wrist", 0.5 * w, 0.4 * w, _shade(dancer.skin, k))
        wrist, elbow = uv[f"{side}_wrist"], uv[f"{side}_elbow"]
        hand = wrist + 0.35 * (wrist - elbow)
        parts.append(
            (
                z(f"{side}_wrist") + 0.01,
                (
                    lambda imgs, wr=wrist, hd=hand, c=_shade(dancer.skin, k), lb=label0 + PART_INDEX[f"{s}_hand"]: (  # noqa: B008
                        _draw_limb(imgs, (c, lb), wr, hd, 0.42 * w, 0.3 * w)
                    )
                ),
            )
        )
        limb(f"{s}_thigh", f"{side}_hip", f"{side}_knee", 0.85 * w, 0.65 * w, _shade(dancer.bottom, k))
        limb(f"{s}_shin", f"{side}_knee", f"{side}_ankle", 0.6 * w, 0.42 * w, _shade(dancer.bottom, k * 0.95))
        limb(f"{s}_foot", f"{side}_ankle", f"{side}_toe", 0.4 * w, 0.3 * w, dancer.shoes, 0.01)

    # Torso: a quad from shoulders to hips, widened by build; a neck; a skirt when the costume has one.
    ls, rs, lh, rh = uv["left_shoulder"], uv["right_shoulder"], uv["left_hip"], uv["right_hip"]
    mid_s, mid_h = (ls + rs) / 2, (lh + rh) / 2
    widen = sh.torso_width_scale
    torso = np.array(
        [
            mid_s + (ls - mid_s) * 1.15 * widen,
            mid_s + (rs - mid_s) * 1.15 * widen,
            mid_h + (rh - mid_h) * 1.25 * widen,
            mid_h + (lh - mid_h) * 1.25 * widen,
        ]
    )
    # If the torso is seen edge-on, give it thickness so it never collapses to a line.
    axis = mid_h - mid_s
    normal = np.array([-axis[1], axis[0]]) / (np.hypot(*axis) + 1e-6)
    thickness = 0.55 * w
    torso_pts = np.concatenate(
        [
            torso,
            [
                mid_h - normal * thickness * 2.2,
                mid_s - normal * thickness * 2.2,
                mid_s + normal * thickness * 2.2,
                mid_h + normal * thickness * 2.2,
            ],
        ]
    )
    hull = cv2.convexHull(torso_pts.astype(np.float32)).reshape(-1, 2)
    torso_depth = z("neck", "pelvis")
    parts.append(
        (torso_depth, lambda imgs, hull=hull: _draw_poly(imgs, (dancer.top, label0 + PART_INDEX["torso"]), hull))
    )
    parts.append(
        (
            torso_depth + 0.005,
            lambda imgs: _draw_limb(
                imgs,
                (dancer.skin, label0 + PART_INDEX["neck"]),
                uv["neck"],
                uv["neck"] + 0.6 * (uv["head"] - uv["neck"]),
                0.45 * w,
                0.4 * w,
            ),
        )
    )
    if dancer.skirt is not None:
        knees = (uv["left_knee"] + uv["right_knee"]) / 2
        hem_y = mid_h[1] + 0.8 * (knees[1] - mid_h[1])
        spread = max(np.hypot(*(lh - rh)) * 1.5, 2.2 * w) * (
            1.8
            if dancer.motion.role == "solo" and dancer.skirt and dancer.top[2] > 180 and dancer.top[1] > 170
            else 1.0
        )
        hem_c = np.array([mid_h[0], hem_y])
        skirt = np.array(
            [
                mid_h + (lh - mid_h) * 1.3,
                mid_h + (rh - mid_h) * 1.3,
                hem_c + np.array([spread, 0]),
                hem_c - np.array([spread, 0]),
            ]
        )
        skirt = cv2.convexHull(skirt.astype(np.float32)).reshape(-1, 2)
        parts.append(
            (
                torso_depth + 0.02,
                lambda imgs, sk=skirt: _draw_poly(imgs, (dancer.skirt, label0 + PART_INDEX["skirt"]), sk),
            )
        )

    # Head: hair behind, skin ellipse, face features when the face points at the camera.
    head = uv["head"]
    r = sh.head_radius * px_per_m
    tilt = np.degrees(np.arctan2(uv["head"][0] - uv["neck"][0], uv["neck"][1] - uv["head"][1]))
    head_depth = z("head") + 0.05

    def draw_head(imgs):
        _draw_ellipse(imgs, (dancer.skin, label0 + PART_INDEX["head"]), head, (0.88 * r, 1.08 * r), tilt)
        hair_lb = label0 + PART_INDEX["hair"]
        if facing_away:
            _draw_ellipse(imgs, (dancer.hair, hair_lb), head - [0, 0.08 * r], (0.92 * r, 1.05 * r), tilt)
            if dancer.long_hair:
                _draw_ellipse(imgs, (dancer.hair, hair_lb), head + [0, 0.9 * r], (0.7 * r, 0.6 * r), tilt)
        else:
            # A cap of hair on top, shifted away from where the face points.
            face_dx = uv["nose"][0] - head[0]
            _draw_ellipse(imgs, (dancer.hair, hair_lb), head - [0.35 * face_dx, 0.55 * r], (0.95 * r, 0.55 * r), tilt)
            image = imgs[0]
            dark = (30, 30, 40)
            for eye in ("left_eye", "right_eye"):
                cv2.circle(
                    image, tuple(_fixed(uv[eye])), max(int(0.16 * r * ONE), ONE // 2), dark, -1, cv2.LINE_AA, SHIFT
                )
            nose = uv["nose"]
            cv2.circle(
                image,
                tuple(_fixed(nose)),
                max(int(0.12 * r * ONE), ONE // 3),
                _shade(dancer.skin, 0.75),
                -1,
                cv2.LINE_AA,
                SHIFT,
            )
            mouth = nose + [0, 0.35 * r]
            cv2.ellipse(
                image,
                tuple(int(v) for v in _fixed(mouth)),
                (max(int(0.25 * r * ONE), ONE // 2), max(int(0.08 * r * ONE), 1)),
                float(tilt),
                0,
                360,
                (60, 60, 150),
                -1,
                cv2.LINE_AA,
                SHIFT,
            )

    parts.append((head_depth, draw_head))
    return parts


def render_clip(scene: Scene):
    """Yield (frame BGR uint8 (H, W, 3), keypoints float32 (P, 17, 3) with x, y in pixels and COCO visibility)."""
    proj = _Projector(scene)
    w, h = scene.width, scene.height
    all_joints = [
        pose_joints(d.shape, d.motion.angles, d.motion.root_xz, d.motion.yaw, d.motion.lift) for d in scene.dancers
    ]
    camera_dir = np.array([0.0, 0.0, 1.0])
    perm = flip_permutation()
    bg = scene.background
    bh, bw = bg.shape[:2]
    for step in range(len(scene.times)):
        # Background: crop panned with the camera (parallax 0.6) and scaled with the zoom.
        zoom = scene.zoom[step]
        cw, ch = w / zoom * 1.05, h / zoom * 1.05
        px = proj.metres_to_pixels(step) * 0.6
        cx = np.clip(bw / 2 + scene.camera_x[step] * px, cw / 2, bw - cw / 2)
        cy = bh * 0.55
        affine = np.array([[cw / w, 0, cx - cw / 2], [0, ch / h, cy - ch / 2]], dtype=np.float64)
        frame = cv2.warpAffine(
            bg, affine, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
        )
        labels = np.zeros((h, w), np.uint8)

        parts = []
        uv_all = []
        for index, (dancer, joints) in enumerate(zip(scene.dancers, all_joints)):
            at = {k: v[step] for k, v in joints.items()}
            uv = {k: proj(v, step) for k, v in at.items() if k not in ("face_forward", "face_left")}
            uv_all.append((at, uv))
            px_per_m = proj.metres_to_pixels(step, float(at["pelvis"][2]))
            parts.extend(_dancer_parts(dancer, at, uv, px_per_m, index, camera_dir))
        # Painter's algorithm: far parts first.
        for _, draw in sorted(parts, key=lambda p: p[0]):
            draw((frame, labels))
        if scene.occluder:
            o = scene.occluder
            box = np.array([[o["x0"], o["y0"]], [o["x1"], o["y0"]], [o["x1"], o["y1"]], [o["x0"], o["y1"]]])
            _draw_poly((frame, labels), (o["colour"], OCCLUDER_LABEL), box)

        keypoints = np.zeros((len(scene.dancers), len(COCO_KEYPOINTS), 3), np.float32)
        for index, (at, uv) in enumerate(uv_all):
            base = index * LABELS_PER_DANCER + 1
            for k, name in enumerate(COCO_KEYPOINTS):
                x, y = uv[name]
                keypoints[index, k, :2] = (x, y)
                xi, yi = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                if not (0 <= xi < w and 0 <= yi < h):
                    keypoints[index, k, 2] = 0
                    continue
                owners = {base + PART_INDEX[p] for p in KEYPOINT_OWNERS[name]}
                visible = int(labels[yi, xi]) in owners
                if name in ("nose", "left_eye", "right_eye"):
                    visible &= float(np.dot(at["face_forward"], camera_dir)) > 0.1
                keypoints[index, k, 2] = 2 if visible else 1
        if scene.mirrored:
            frame = cv2.flip(frame, 1)
            keypoints[..., 0] = (w - 1) - keypoints[..., 0]
            keypoints = keypoints[:, perm]
        yield frame, keypoints
