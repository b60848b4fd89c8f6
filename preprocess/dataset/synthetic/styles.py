"""The ten dance styles as motion signatures, and the function that animates a scene from one.

A signature is plain data (tempo, meter, limb amplitudes, level, turning, travel, dancers, hold, costume palette);
``animate_scene`` turns it into joint-angle curves, floor paths and facing directions for every dancer in a clip.

Class evidence is split across streams on purpose (see docs/synthetic.md):

* appearance (RGB): the costume palette groups styles: ballet, break, flamenco and square each have their own;
  foxtrot, quickstep, tango and waltz share the "ballroom" palette; latin and swing share the "social" palette.
* motion over time (flow): within a palette group the styles differ in tempo, meter, rise and fall, hops, travel
  and turning; foxtrot and quickstep have the same body shape and hold and differ *only* in timing.
* body shape (pose): tango is danced low with flexed knees and head snaps, ballet on the toes with rounded arms,
  break in a crouch, latin with hip action and a free arm out, swing with kicks; tango vs foxtrot have the same
  palette and close tempi and are told apart mainly by shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .body import ANGLE_NAMES

STYLES = ("ballet", "break", "flamenco", "foxtrot", "latin", "quickstep", "square", "swing", "tango", "waltz")

# Arm carriage per role as (shoulder_abduct, shoulder_flex, elbow_abduct, elbow_flex) for the left and right arm.
ARM_POSES: dict[str, tuple[tuple[float, float, float, float], tuple[float, float, float, float]]] = {
    "relaxed": ((0.25, 0.1, 0.05, 0.3), (0.25, 0.1, 0.05, 0.3)),
    "closed_leader": ((1.35, 0.25, 0.9, 0.2), (0.55, 0.9, 0.2, 0.9)),
    "closed_follower": ((0.9, 0.9, 0.2, 0.6), (1.35, 0.25, 0.9, 0.2)),
    "open_leader": ((0.45, 0.9, 0.0, 0.2), (1.3, 0.3, 0.3, 0.2)),
    "open_follower": ((1.3, 0.3, 0.3, 0.2), (0.45, 0.9, 0.0, 0.2)),
    "ballet": ((2.5, 0.35, 0.55, 0.3), (2.5, 0.35, 0.55, 0.3)),
    "flamenco": ((2.2, 0.45, 0.7, 0.5), (1.6, 0.5, 0.8, 0.7)),
    "break": ((0.7, 0.7, 0.3, 1.4), (0.7, 0.7, 0.3, 1.4)),
    "ring": ((0.75, 0.15, 0.05, 0.15), (0.75, 0.15, 0.05, 0.15)),
}


@dataclass(frozen=True)
class StyleSignature:
    """How one style moves and looks. Angles in radians, tempo in beats per minute, speeds in m/s."""

    name: str
    palette: str
    tempo_bpm: tuple[float, float]
    beats_per_bar: int = 4
    dancers: int = 1
    hold: str = "none"  # none | closed | open | ring
    arms: str = "relaxed"
    step_amplitude: float = 0.35  # hip flexion of a walking step
    knee_lift: float = 0.4  # extra knee flexion of the swinging leg
    knee_bend: float = 0.05  # standing knee flexion: the "level" (tango low, break crouched)
    hip_bend: float = 0.0  # standing hip flexion paired with knee_bend
    lean_forward: float = 0.0
    on_toes: float = 0.15  # foot pointing at rest (1.2 = on the toes)
    rise_fall: float = 0.0  # extra pointing over the bar (waltz, foxtrot)
    hop: float = 0.0  # vertical bounce per beat (m)
    hip_action: float = 0.0  # pelvis shift/roll per step (Latin)
    counter_twist: float = 0.08  # shoulders against hips
    arm_swing: float = 0.1
    arm_wave: float = 0.0  # arm raising with the beat (flamenco braceo, break)
    kick: float = 0.0  # forward leg flick on the off-beat (swing)
    stamp: float = 0.0  # fast small heel stamps (flamenco zapateado)
    extension: float = 0.0  # slow leg extension to the side (ballet developpe)
    head_snap: float = 0.0  # sharp head turns on the bar (tango)
    staccato: float = 0.0  # 0 smooth sine steps .. 1 sharp start-stop steps
    turn_rate: float = 0.0  # continuous turning, radians per bar
    spin_every_bars: float = 0.0  # a fast 360-degree spin every N bars (0 = never)
    travel: str = "inplace"  # inplace | line | circle | ring
    travel_speed: float = 0.0
    notes: str = field(default="", compare=False)


SIGNATURES: dict[str, StyleSignature] = {
    s.name: s
    for s in (
        StyleSignature(
            "ballet",
            palette="ballet",
            tempo_bpm=(56, 68),
            beats_per_bar=4,
            arms="ballet",
            step_amplitude=0.2,
            knee_lift=0.2,
            on_toes=1.25,
            rise_fall=0.1,
            extension=1.1,
            counter_twist=0.05,
            arm_swing=0.25,
            arm_wave=0.5,
            spin_every_bars=2.0,
            travel="line",
            travel_speed=0.15,
            notes="solo, on pointe, rounded arms, slow developpe leg extensions and pirouettes",
        ),
        StyleSignature(
            "break",
            palette="street",
            tempo_bpm=(96, 112),
            arms="break",
            step_amplitude=0.45,
            knee_lift=0.6,
            knee_bend=1.25,
            hip_bend=0.9,
            lean_forward=0.45,
            hop=0.03,
            arm_swing=0.6,
            arm_wave=0.4,
            counter_twist=0.35,
            staccato=0.6,
            spin_every_bars=3.0,
            notes="solo, crouched toprock, big arm swings, spins",
        ),
        StyleSignature(
            "flamenco",
            palette="flamenco",
            tempo_bpm=(110, 130),
            beats_per_bar=3,
            arms="flamenco",
            step_amplitude=0.12,
            knee_lift=0.15,
            lean_forward=-0.12,
            stamp=0.55,
            arm_wave=0.5,
            counter_twist=0.25,
            turn_rate=0.5,
            notes="solo, upright arched back, raised arms with braceo, rapid heel stamps",
        ),
        StyleSignature(
            "foxtrot",
            palette="ballroom",
            tempo_bpm=(112, 120),
            dancers=2,
            hold="closed",
            arms="closed",
            step_amplitude=0.42,
            knee_lift=0.25,
            rise_fall=0.35,
            travel="line",
            travel_speed=0.55,
            turn_rate=0.15,
            notes="couple, closed hold, smooth long travelling steps, gentle rise and fall",
        ),
        StyleSignature(
            "latin",
            palette="social",
            tempo_bpm=(116, 128),
            dancers=2,
            hold="open",
            arms="open",
            step_amplitude=0.25,
            knee_lift=0.35,
            hip_action=0.07,
            counter_twist=0.3,
            arm_wave=0.35,
            staccato=0.4,
            notes="couple, open hold, hip action, free arm out, in place",
        ),
        StyleSignature(
            "quickstep",
            palette="ballroom",
            tempo_bpm=(196, 208),
            dancers=2,
            hold="closed",
            arms="closed",
            step_amplitude=0.38,
            knee_lift=0.3,
            rise_fall=0.25,
            hop=0.05,
            travel="line",
            travel_speed=0.9,
            turn_rate=0.15,
            notes="couple, closed hold like foxtrot but fast, with hops and chasses",
        ),
        StyleSignature(
            "square",
            palette="square",
            tempo_bpm=(118, 128),
            dancers=4,
            hold="ring",
            arms="ring",
            step_amplitude=0.3,
            knee_lift=0.35,
            hop=0.025,
            travel="ring",
            travel_speed=0.5,
            notes="four dancers in a ring holding hands, circling with a bouncy walk",
        ),
        StyleSignature(
            "swing",
            palette="social",
            tempo_bpm=(136, 150),
            dancers=2,
            hold="open",
            arms="open",
            step_amplitude=0.3,
            knee_lift=0.45,
            knee_bend=0.2,
            hip_bend=0.1,
            hop=0.04,
            kick=0.9,
            arm_swing=0.3,
            spin_every_bars=2.0,
            notes="couple, open hold, bounce and forward kicks, underarm spins",
        ),
        StyleSignature(
            "tango",
            palette="ballroom",
            tempo_bpm=(116, 126),
            dancers=2,
            hold="closed",
            arms="closed",
            step_amplitude=0.4,
            knee_lift=0.15,
            knee_bend=0.55,
            hip_bend=0.3,
            lean_forward=0.12,
            head_snap=1.0,
            staccato=0.9,
            travel="line",
            travel_speed=0.45,
            notes="couple, compact closed hold, low flexed knees, staccato walks, head snaps, no rise and fall",
        ),
        StyleSignature(
            "waltz",
            palette="ballroom",
            tempo_bpm=(84, 92),
            beats_per_bar=3,
            dancers=2,
            hold="closed",
            arms="closed",
            step_amplitude=0.36,
            knee_lift=0.25,
            rise_fall=0.9,
            turn_rate=3.1,
            travel="circle",
            travel_speed=0.35,
            notes="couple, closed hold, 3/4 with strong rise and fall, continuous rotation while travelling",
        ),
    )
}


@dataclass
class DancerMotion:
    """Everything ``pose_joints`` needs for one dancer over a clip."""

    angles: dict[str, np.ndarray]
    root_xz: np.ndarray  # (T, 2)
    yaw: np.ndarray  # (T,)
    lift: np.ndarray  # (T,)
    role: str
    tempo_bpm: float


def _profile(wave: np.ndarray, staccato: float) -> np.ndarray:
    """Shape a sine into sharper start-stop steps as staccato goes from 0 to 1 (same range [-1, 1])."""
    if staccato <= 0:
        return wave
    k = 1.0 + 6.0 * staccato
    return np.tanh(k * wave) / np.tanh(k)


def _spin(t_bars: np.ndarray, every: float, phase: float, duration_bars: float = 0.5) -> np.ndarray:
    """Cumulative yaw of a full turn performed every ``every`` bars, eased in and out (radians, non-decreasing)."""
    if every <= 0:
        return np.zeros_like(t_bars)
    cycles = (t_bars + phase) / every
    whole = np.floor(cycles)
    within = np.clip((cycles - whole) * every / duration_bars, 0, 1)
    eased = within * within * (3 - 2 * within)
    return 2 * np.pi * (whole + eased)


def animate_scene(sig: StyleSignature, t: np.ndarray, rng: np.random.Generator) -> list[DancerMotion]:
    """Joint angles, paths and facing for every dancer of a clip sampled at times ``t`` (seconds).

    ``rng`` supplies the per-clip nuisance: tempo within the style's range, a speed jitter that slowly drifts,
    phase, travel direction and small per-dancer differences in amplitude.
    """
    steps = t.shape[0]
    bpm = rng.uniform(*sig.tempo_bpm)
    # Speed jitter: the dancers drift up to +-4 % around the tempo over the clip, like a live performance.
    drift = 1 + 0.04 * np.sin(2 * np.pi * t / rng.uniform(3, 8) + rng.uniform(0, 2 * np.pi))
    beats = np.cumsum(np.concatenate([[0.0], np.diff(t) * drift[1:]])) * bpm / 60 + rng.uniform(0, sig.beats_per_bar)
    beat_phase = 2 * np.pi * beats
    step_phase = beat_phase / 2  # one step per beat, alternating legs
    bars = beats / sig.beats_per_bar
    bar_phase = 2 * np.pi * bars

    def curve(value) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=float), (steps,)).copy()

    motions: list[DancerMotion] = []
    heading = rng.uniform(-0.6, 0.6) + (np.pi if rng.random() < 0.5 and sig.travel == "line" else 0.0)
    base_yaw = rng.uniform(-0.35, 0.35)
    ring_radius = 0.75

    # The scene's shared path and turning: a couple travels and turns as one.
    turn = base_yaw + sig.turn_rate * bars + _spin(bars, sig.spin_every_bars, rng.uniform(0, 1))
    if sig.travel == "line":
        distance = sig.travel_speed * (t - t.mean())
        centre = distance[:, None] * np.array([np.cos(heading), 0.3 * np.sin(heading)])[None, :]
    elif sig.travel == "circle":
        angle = sig.travel_speed * t / 0.9 * np.sign(rng.uniform(-1, 1)) + rng.uniform(0, 2 * np.pi)
        centre = np.stack([0.6 * np.cos(angle), 0.35 * np.sin(angle)], axis=-1)
    else:
        centre = np.zeros((steps, 2)) + rng.normal(0, 0.05, 2)

    for d in range(sig.dancers):
        amp = rng.uniform(0.85, 1.15)  # this dancer's energy
        own = rng.uniform(-0.08, 0.08)  # small timing offset between partners
        walk = _profile(np.sin(step_phase + own), sig.staccato)
        a = {name: np.zeros(steps) for name in ANGLE_NAMES}

        role = "solo"
        arms = sig.arms
        if sig.hold in ("closed", "open"):
            role = "leader" if d == 0 else "follower"
            arms = f"{sig.arms}_{role}"
        (la, lf, lea, lef), (ra, rf, rea, ref) = ARM_POSES[arms]
        a["l_shoulder_abduct"] += la
        a["l_shoulder_flex"] += lf
        a["l_elbow_abduct"] += lea
        a["l_elbow_flex"] += lef
        a["r_shoulder_abduct"] += ra
        a["r_shoulder_flex"] += rf
        a["r_elbow_abduct"] += rea
        a["r_elbow_flex"] += ref

        # Legs: alternate steps, the swinging leg lifts its knee; the level sets the standing bend.
        lift_left = np.clip(walk, 0, None)
        lift_right = np.clip(-walk, 0, None)
        mirror = -1.0 if role == "follower" else 1.0  # the follower steps back when the leader steps forward
        a["l_hip_flex"] += sig.hip_bend + mirror * amp * sig.step_amplitude * walk
        a["r_hip_flex"] += sig.hip_bend - mirror * amp * sig.step_amplitude * walk
        a["l_knee_flex"] += sig.knee_bend + amp * sig.knee_lift * lift_left
        a["r_knee_flex"] += sig.knee_bend + amp * sig.knee_lift * lift_right
        a["l_hip_abduct"] += 0.06 + (0.25 if sig.name == "break" else 0.0)
        a["r_hip_abduct"] += 0.06 + (0.25 if sig.name == "break" else 0.0)
        rise = sig.rise_fall * 0.5 * (1 - np.cos(bar_phase + own))  # down on beat one, up through the bar
        a["l_foot_point"] += sig.on_toes + rise + 0.3 * lift_left
        a["r_foot_point"] += sig.on_toes + rise + 0.3 * lift_right
        a["lean_forward"] += sig.lean_forward
        a["twist"] += sig.counter_twist * amp * np.sin(step_phase + own)
        a["hip_shift"] += sig.hip_action * np.sin(step_phase + own)
        a["hip_roll"] += 2.0 * sig.hip_action * np.sin(step_phase + own)
        a["lean_side"] += 0.5 * sig.hip_action * np.sin(step_phase + own)

        # Arms: counter-swing with the legs, raising with the beat.
        swing = amp * sig.arm_swing * np.sin(step_phase + np.pi + own)
        wave = amp * sig.arm_wave * np.sin(beat_phase / 2 + own)
        if sig.hold in ("closed", "ring"):
            swing = swing * 0.2
            wave = wave * 0.2
        a["l_shoulder_flex"] += swing
        a["r_shoulder_flex"] -= swing
        a["l_shoulder_abduct"] += wave
        a["r_shoulder_abduct"] -= wave * (0.5 if sig.hold == "open" else 1.0)
        a["l_elbow_flex"] += 0.5 * wave
        a["r_elbow_flex"] += 0.5 * np.abs(wave)

        # Style-specific accents.
        if sig.stamp:
            stamp = np.clip(np.sin(4 * beat_phase + own), 0, None) ** 2
            a["l_knee_flex"] += sig.stamp * stamp * (np.sin(beat_phase) > 0)
            a["r_knee_flex"] += sig.stamp * stamp * (np.sin(beat_phase) <= 0)
            a["l_hip_flex"] += 0.5 * sig.stamp * stamp * (np.sin(beat_phase) > 0)
            a["r_hip_flex"] += 0.5 * sig.stamp * stamp * (np.sin(beat_phase) <= 0)
        if sig.kick:
            kick = np.clip(np.sin(beat_phase + own), 0, None) ** 4
            leg = "l" if d % 2 == 0 else "r"
            kick_side = (np.sin(step_phase) > 0) if leg == "l" else (np.sin(step_phase) <= 0)
            a[f"{leg}_hip_flex"] += sig.kick * kick * kick_side
            a[f"{leg}_knee_flex"] -= 0.3 * sig.kick * kick * kick_side
        if sig.extension:
            ext = 0.5 * (1 - np.cos(bar_phase / 2 + own))
            a["r_hip_abduct"] += sig.extension * ext
            a["r_hip_flex"] += 0.35 * sig.extension * ext
            a["r_foot_point"] += 0.3 * ext
        if sig.head_snap:
            a["head_turn"] += (
                sig.head_snap * np.tanh(6 * np.sin(bar_phase / 2 + own)) * (0.7 if role == "leader" else -0.7)
            )
        if role == "follower" and sig.hold == "closed":
            a["head_turn"] += 0.5  # the follower looks over the leader's right shoulder
            a["lean_forward"] -= 0.12
        a["head_tilt"] += -0.1 * sig.lean_forward

        # Where the dancer stands and which way they face.
        if sig.hold == "ring":
            # Dancers evenly spaced on a circle that rotates; each faces the centre.
            spin_angle = sig.travel_speed / ring_radius * t + 2 * np.pi * d / sig.dancers + 0.3
            root = centre + ring_radius * np.stack([np.sin(spin_angle), np.cos(spin_angle)], axis=-1)
            yaw = spin_angle + np.pi + 0.25 * np.sin(step_phase)
            role = "ring"
        elif sig.hold in ("closed", "open"):
            gap = 0.34 if sig.hold == "closed" else 0.85
            # Partners face each other across the couple's centre; the couple turns as one.
            direction = turn + (0.0 if d == 0 else np.pi) + 0.9  # three-quarter view of the couple
            side_offset = 0.06 if sig.hold == "closed" else 0.0
            root = centre + (gap / 2) * np.stack([np.sin(direction - np.pi), np.cos(direction - np.pi)], axis=-1)
            root = root + side_offset * np.stack([np.cos(direction), -np.sin(direction)], axis=-1)
            yaw = direction
            if sig.spin_every_bars and d == 1:  # the follower's underarm turn
                yaw = yaw + _spin(bars, sig.spin_every_bars, 0.5)
        else:
            root = centre
            yaw = turn
        lift = sig.hop * amp * np.clip(np.sin(beat_phase + own), 0, None) ** 2
        motions.append(DancerMotion(a, root, yaw, curve(lift), role, float(bpm)))
    return motions
