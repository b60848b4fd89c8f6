"""A 3D stick-and-volume human: joint angles over time in, world-space joints out.

Body frame: x = the dancer's left, y = up, z = the direction the dancer faces. World frame: the same axes with the
camera on +z looking back at the origin, so a dancer with yaw 0 faces the camera and their left side appears on the
image's right, as in a real frontal photograph. Units are metres. Everything is vectorised over time: every angle is
an array of shape (T,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Joints the renderer draws; the COCO face points are derived from the head.
JOINTS = (
    "pelvis",
    "neck",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_toe",
    "right_toe",
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
)


@dataclass(frozen=True)
class BodyShape:
    """Segment lengths and widths of one performer (metres)."""

    torso: float = 0.52
    neck: float = 0.08
    head_radius: float = 0.11
    shoulder_half: float = 0.19
    hip_half: float = 0.11
    upper_arm: float = 0.29
    forearm: float = 0.27
    thigh: float = 0.44
    shin: float = 0.42
    foot: float = 0.16
    limb_width: float = 0.075
    torso_width_scale: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> BodyShape:
        """A random adult: overall scale ±8 %, each segment a further ±7 %, build ±15 %."""
        scale = rng.uniform(0.92, 1.08)
        base = cls()

        def jitter(value: float, spread: float = 0.07) -> float:
            return float(value * scale * rng.uniform(1 - spread, 1 + spread))

        return cls(
            torso=jitter(base.torso),
            neck=jitter(base.neck),
            head_radius=jitter(base.head_radius, 0.05),
            shoulder_half=jitter(base.shoulder_half, 0.1),
            hip_half=jitter(base.hip_half, 0.12),
            upper_arm=jitter(base.upper_arm),
            forearm=jitter(base.forearm),
            thigh=jitter(base.thigh),
            shin=jitter(base.shin),
            foot=jitter(base.foot),
            limb_width=jitter(base.limb_width, 0.15),
            torso_width_scale=float(rng.uniform(0.85, 1.15)),
        )


def _limb_direction(abduct: np.ndarray, flex: np.ndarray, side: float) -> np.ndarray:
    """Unit vector (T, 3) of a limb hanging down, swung ``abduct`` out to ``side`` (+1 left) and ``flex`` forward."""
    return np.stack([side * np.sin(abduct), -np.cos(abduct) * np.cos(flex), np.cos(abduct) * np.sin(flex)], axis=-1)


def _rotate_y(vectors: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate (T, 3) or (T, J, 3) vectors about the vertical axis by ``angle`` (T,)."""
    c, s = np.cos(angle), np.sin(angle)
    if vectors.ndim == 3:
        c, s = c[:, None], s[:, None]
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    return np.stack([c * x + s * z, y, -s * x + c * z], axis=-1)


ANGLE_NAMES = (
    # torso
    "lean_forward",
    "lean_side",
    "twist",
    "head_turn",
    "head_tilt",
    "hip_roll",
    "hip_shift",
    # arms
    "l_shoulder_abduct",
    "l_shoulder_flex",
    "l_elbow_abduct",
    "l_elbow_flex",
    "r_shoulder_abduct",
    "r_shoulder_flex",
    "r_elbow_abduct",
    "r_elbow_flex",
    # legs
    "l_hip_abduct",
    "l_hip_flex",
    "l_knee_flex",
    "l_foot_point",
    "r_hip_abduct",
    "r_hip_flex",
    "r_knee_flex",
    "r_foot_point",
)


def pose_joints(
    shape: BodyShape,
    angles: dict[str, np.ndarray],
    root_xz: np.ndarray,
    yaw: np.ndarray,
    lift: np.ndarray,
) -> dict[str, np.ndarray]:
    """World-space joints {name: (T, 3)} for one dancer.

    ``root_xz`` (T, 2) is the floor position, ``yaw`` (T,) the facing direction (0 = towards the camera) and ``lift``
    (T,) a vertical offset for hops. The body is placed so that its lowest foot point touches the floor, so bending the
    knees lowers the pelvis and pointing the feet raises it, as on a real floor.
    """
    a = angles
    steps = root_xz.shape[0]
    zeros = np.zeros(steps)

    # Torso: up vector from forward and sideways lean; shoulders twisted against the hips about the vertical.
    up = np.stack(
        [-np.sin(a["lean_side"]), np.cos(a["lean_side"]) * np.cos(a["lean_forward"]), np.sin(a["lean_forward"])],
        axis=-1,
    )
    pelvis = np.stack([a["hip_shift"], zeros, zeros], axis=-1)
    neck = pelvis + shape.torso * up
    lateral_shoulders = _rotate_y(np.tile([1.0, 0.0, 0.0], (steps, 1)), a["twist"])
    joints: dict[str, np.ndarray] = {"pelvis": pelvis, "neck": neck}
    joints["left_shoulder"] = neck + shape.shoulder_half * lateral_shoulders - 0.03 * up
    joints["right_shoulder"] = neck - shape.shoulder_half * lateral_shoulders - 0.03 * up

    for side, prefix, name in ((1.0, "l", "left"), (-1.0, "r", "right")):
        upper = _rotate_y(
            _limb_direction(a[f"{prefix}_shoulder_abduct"], a[f"{prefix}_shoulder_flex"], side), a["twist"]
        )
        lower = _rotate_y(
            _limb_direction(
                a[f"{prefix}_shoulder_abduct"] + a[f"{prefix}_elbow_abduct"],
                a[f"{prefix}_shoulder_flex"] + a[f"{prefix}_elbow_flex"],
                side,
            ),
            a["twist"],
        )
        joints[f"{name}_elbow"] = joints[f"{name}_shoulder"] + shape.upper_arm * upper
        joints[f"{name}_wrist"] = joints[f"{name}_elbow"] + shape.forearm * lower

    # Hips roll (one side up) for Latin hip action.
    roll = a["hip_roll"]
    for side, prefix, name in ((1.0, "l", "left"), (-1.0, "r", "right")):
        hip = pelvis + np.stack([side * shape.hip_half * np.cos(roll), side * shape.hip_half * np.sin(roll), zeros], -1)
        thigh = _limb_direction(a[f"{prefix}_hip_abduct"], a[f"{prefix}_hip_flex"], side)
        shin = _limb_direction(
            0.6 * a[f"{prefix}_hip_abduct"], a[f"{prefix}_hip_flex"] - a[f"{prefix}_knee_flex"], side
        )
        joints[f"{name}_hip"] = hip
        joints[f"{name}_knee"] = hip + shape.thigh * thigh
        joints[f"{name}_ankle"] = joints[f"{name}_knee"] + shape.shin * shin
        point = a[f"{prefix}_foot_point"]  # 0 flat, pi/2 on the toes
        foot = np.stack([zeros, -np.sin(point), np.cos(point)], axis=-1)
        joints[f"{name}_toe"] = joints[f"{name}_ankle"] + shape.foot * foot

    # Head and face, turned by twist + head_turn, tilted forward by head_tilt.
    head_up = up * np.cos(a["head_tilt"])[:, None] + np.stack([zeros, zeros, np.sin(a["head_tilt"])], -1)
    head = neck + (shape.neck + shape.head_radius) * head_up
    face_forward = _rotate_y(np.tile([0.0, 0.0, 1.0], (steps, 1)), a["twist"] + a["head_turn"])
    face_left = _rotate_y(np.tile([1.0, 0.0, 0.0], (steps, 1)), a["twist"] + a["head_turn"])
    r = shape.head_radius
    joints["head"] = head
    joints["nose"] = head + 0.98 * r * face_forward - 0.15 * r * head_up
    joints["left_eye"] = head + 0.8 * r * face_forward + 0.38 * r * face_left + 0.18 * r * head_up
    joints["right_eye"] = head + 0.8 * r * face_forward - 0.38 * r * face_left + 0.18 * r * head_up
    joints["left_ear"] = head + 0.95 * r * face_left
    joints["right_ear"] = head - 0.95 * r * face_left

    # Stand on the floor: the lowest ankle/toe point (ankle minus a heel allowance) touches y = 0.
    lowest = np.minimum.reduce(
        [
            joints["left_ankle"][:, 1] - 0.07,
            joints["right_ankle"][:, 1] - 0.07,
            joints["left_toe"][:, 1],
            joints["right_toe"][:, 1],
        ]
    )
    offset = -lowest + lift
    stacked = np.stack([joints[name] for name in JOINTS], axis=1)  # (T, J, 3)
    stacked[..., 1] += offset[:, None]
    world = _rotate_y(stacked, yaw)
    world[..., 0] += root_xz[:, None, 0]
    world[..., 2] += root_xz[:, None, 1]
    out = {name: world[:, i] for i, name in enumerate(JOINTS)}
    # Facing directions, used for face visibility and for drawing the face.
    out["face_forward"] = _rotate_y(face_forward, yaw)
    out["face_left"] = _rotate_y(face_left, yaw)
    return out
