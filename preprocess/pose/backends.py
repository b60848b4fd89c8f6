"""Pose estimators behind one interface: per frame, a list of (keypoints (17, 3): x, y pixels + confidence, score).

* ``MediaPipePose``: MediaPipe Tasks PoseLandmarker (BlazePose, 33 landmarks → COCO-17), VIDEO mode. VIDEO mode
  tracks between frames, so each video gets a fresh landmarker: results never depend on which video came before.
* ``OnnxYoloPose``: a multi-person COCO-17 model with the YOLO-pose output layout (1 × 56 × anchors: cx, cy, w, h,
  score, 17 × (x, y, visibility)), run with onnxruntime (an optional extra); letterboxed input, NMS on the boxes.
* ``MoveNetMultiPose``: Google's MoveNet MultiPose (Apache-2.0, up to 6 people, COCO-17) as ONNX: uint8 RGB input
  letterboxed to multiples of 32 (longer side ``input_size``), output 1 × 6 × 56 (17 × (y, x, score) normalised to
  the padded input, box, person score); no NMS needed. The ``movenet`` backend.

Model files are never downloaded at import: ``resolve_mediapipe_model`` looks in the order --model, environment,
shared assets, user cache, then downloads MediaPipe's official bundle when online.
"""

from __future__ import annotations

import os
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from ..batch import DataError, atomic_path
from ..model_files import cache_dir, file_sha256, find_model_by_sha256, find_model_file, shared_dir
from .keypoints import BLAZEPOSE_TO_COCO

MEDIAPIPE_MODEL_NAME = "pose_landmarker_full.task"
MEDIAPIPE_MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/pose_landmarker/pose_landmarker_full/"
    "float16/latest/pose_landmarker_full.task"
)
MODEL_ENV = "DANCE_POSE_MODEL"
ONNX_MODEL_ENV = "DANCE_ONNX_POSE_MODEL"
MOVENET_MODEL_NAME = "movenet_multipose_lightning_256.onnx"
MOVENET_MODEL_ENV = "DANCE_MOVENET_MODEL"


def resolve_mediapipe_model(explicit: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """--model PATH > $DANCE_POSE_MODEL > shared/models > user cache > download of the official model."""
    path, tried = find_model_file(explicit, MODEL_ENV, MEDIAPIPE_MODEL_NAME)
    if path is not None:
        return path
    target = cache_dir() / MEDIAPIPE_MODEL_NAME
    if download:
        try:
            with urllib.request.urlopen(MEDIAPIPE_MODEL_URL, timeout=20) as response, atomic_path(target) as tmp:
                tmp.write_bytes(response.read())
            return target
        except OSError as err:
            tried.append(f"download failed ({err.__class__.__name__})")
    raise DataError(
        MEDIAPIPE_MODEL_NAME,
        f"no MediaPipe pose model: pass --model PATH or set $DANCE_POSE_MODEL (looked in: {'; '.join(tried)})",
    )


def resolve_movenet_model(explicit: str | os.PathLike | None = None) -> Path:
    """--model PATH > $DANCE_MOVENET_MODEL > shared/models > user cache. MoveNet is Apache-2.0, but Google publishes
    it as TFLite/TF.js only: the ONNX conversion is a file the user (or shared/) provides, never downloaded here."""
    path, tried = find_model_file(explicit, MOVENET_MODEL_ENV, MOVENET_MODEL_NAME)
    if path is not None:
        return path
    raise DataError(
        MOVENET_MODEL_NAME,
        f"no MoveNet MultiPose ONNX model: pass --model PATH or set ${MOVENET_MODEL_ENV} "
        f"(looked in: {'; '.join(tried)})",
    )


def resolve_onnx_model(explicit: str | os.PathLike | None = None) -> Path:
    """--model PATH > $DANCE_ONNX_POSE_MODEL. The user supplies this file (YOLO-pose weights are not ours to ship)."""
    candidate = explicit or os.environ.get(ONNX_MODEL_ENV)
    if not candidate:
        raise DataError("onnx backend", f"needs a model file: pass --model PATH or set ${ONNX_MODEL_ENV}")
    path = Path(candidate)
    if not path.is_file():
        raise DataError(path, "ONNX pose model does not exist")
    return path


@contextmanager
def _quiet_native_stderr():
    """Silence what native code writes to file descriptor 2 (MediaPipe prints several log lines each time a
    landmarker starts, which would be one per video in a batch). Failures still raise Python exceptions."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class MediaPipePose:
    def __init__(
        self,
        model_path: str | os.PathLike,
        max_persons: int = 4,
        min_detection: float = 0.5,
        min_presence: float = 0.5,
        min_tracking: float = 0.5,
    ):
        try:
            import mediapipe  # noqa: F401
        except ImportError:
            raise DataError(
                "mediapipe", "is not installed: pip install 'dance-streams[pose]' (or use --backend onnx)"
            ) from None
        self.model_path = str(model_path)
        self.options = dict(
            num_poses=max_persons,
            min_pose_detection_confidence=min_detection,
            min_pose_presence_confidence=min_presence,
            min_tracking_confidence=min_tracking,
        )

    @contextmanager
    def video(self):
        """A detector for one video: ``detect(rgb, time_ms)`` with strictly increasing times."""
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=self.model_path),
            running_mode=vision.RunningMode.VIDEO,
            **self.options,
        )
        last = [-1]
        with _quiet_native_stderr():
            landmarker = vision.PoseLandmarker.create_from_options(options)

        def detect(rgb: np.ndarray, time_ms: float):
            stamp = max(int(round(time_ms)), last[0] + 1)  # MediaPipe needs strictly increasing timestamps
            first = last[0] < 0
            last[0] = stamp
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
            if first:  # the first inference logs too
                with _quiet_native_stderr():
                    result = landmarker.detect_for_video(image, stamp)
            else:
                result = landmarker.detect_for_video(image, stamp)
            h, w = rgb.shape[:2]
            people = []
            for landmarks in result.pose_landmarks:
                picked = [landmarks[i] for i in BLAZEPOSE_TO_COCO]
                kp = np.array(
                    [[lm.x * w, lm.y * h, lm.visibility if lm.visibility is not None else 1.0] for lm in picked],
                    dtype=np.float32,
                )
                kp = np.nan_to_num(kp, nan=0.0, posinf=0.0, neginf=0.0)
                people.append((kp, float(kp[:, 2].mean())))
            return people

        try:
            yield detect
        finally:
            with _quiet_native_stderr():  # closing logs a line per landmarker too (MediaPipe 1.2.3)
                landmarker.close()


def onnx_providers(device: str) -> list:
    """onnxruntime's execution providers for ``device`` (cpu, cuda, cuda:N), or a named error where this
    onnxruntime cannot run there: checked before a batch starts, so that it fails once, not once per video."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DataError("onnxruntime", "is not installed: pip install 'dance-streams[onnx]'") from None
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise DataError("--device", f"{device!r} is neither cpu nor cuda[:N]")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DataError(
            f"--device {device}",
            f"onnxruntime {ort.__version__} here has no CUDA provider: pip install 'dance-streams[onnx-gpu]' "
            "(onnxruntime-gpu, in place of onnxruntime)",
        )
    return [("CUDAExecutionProvider", {"device_id": int(device[5:] or 0)}), "CPUExecutionProvider"]


def onnx_session(model_path: str | os.PathLike, device: str = "cpu", *, one_thread: bool = True):
    """An onnxruntime session for ``device``: "cpu" with one thread (``one_thread``: a batch runs one process per
    core already; a stream network scoring in one process takes every core), or "cuda[:N]" on onnxruntime's CUDA
    provider (``pip install 'dance-streams[onnx-gpu]'``). A file that is not a loadable model, or a GPU that
    onnxruntime cannot use, is a named one-line error."""
    providers = onnx_providers(device)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if device == "cpu" and one_thread:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(model_path), options, providers=providers)
    except Exception as err:  # noqa: BLE001 - a foreign file's failure, by name
        raise DataError(model_path, f"not a loadable ONNX model ({str(err).splitlines()[0][:100]})") from None
    if device != "cpu" and "CUDAExecutionProvider" not in session.get_providers():
        # onnxruntime falls back to the CPU, with a warning only, when CUDA or cuDNN libraries are missing
        raise DataError(f"--device {device}", "onnxruntime's CUDA provider did not load (CUDA/cuDNN libraries?)")
    return session


class _OnnxPose:
    """What both ONNX backends share: a session, frames run in batches (``detect_batch``) where the model takes a
    batch of any size, one at a time where its export fixed the batch at 1 (most do; then nothing is stacked).

    frames ─prepare─► model inputs ─session.run (a batch a call)─► outputs ─decode─► people per frame"""

    def __init__(self, model_path: str | os.PathLike, device: str):
        self.session = onnx_session(model_path, device)
        self.device = device
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.takes_batches = not (isinstance(first.shape[0], int) and first.shape[0] > 0)

    def prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple]:
        """(one frame's model input, what ``decode`` needs to map its output back to the frame's pixels)"""
        raise NotImplementedError

    def decode(self, output: np.ndarray, geometry: tuple) -> list:
        raise NotImplementedError

    def detect_batch(self, images: list[np.ndarray]) -> list[list]:
        """People (keypoints (17, 3) in each frame's pixels, score) of every frame, in order."""
        if not self.takes_batches:
            return [self._run_one(*self.prepare(rgb)) for rgb in images]
        prepared = [self.prepare(rgb) for rgb in images]
        if len({x.shape for x, _ in prepared}) > 1:  # frames of other sizes do not stack (a video's all share one)
            return [self._run_one(x, geometry) for x, geometry in prepared]
        outputs = self.session.run(None, {self.input_name: np.stack([x for x, _ in prepared])})[0]
        return [self.decode(out, geometry) for out, (_, geometry) in zip(outputs, prepared, strict=True)]

    def _run_one(self, x: np.ndarray, geometry: tuple) -> list:
        return self.decode(self.session.run(None, {self.input_name: x[None]})[0][0], geometry)

    def detect_image(self, rgb: np.ndarray) -> list:
        return self._run_one(*self.prepare(rgb))

    @contextmanager
    def video(self):
        yield lambda rgb, time_ms: self.detect_image(rgb)


class OnnxYoloPose(_OnnxPose):
    input_size = 640

    def __init__(
        self,
        model_path: str | os.PathLike,
        max_persons: int = 20,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        device: str = "cpu",
    ):
        super().__init__(model_path, device)
        self.max_persons = max_persons
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold

    def letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        h, w = rgb.shape[:2]
        size = self.input_size
        scale = min(size / h, size / w)
        nw, nh = round(w * scale), round(h * scale)
        resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        pad_x, pad_y = (size - nw) / 2, (size - nh) / 2
        left, top = int(round(pad_x - 0.1)), int(round(pad_y - 0.1))
        canvas = cv2.copyMakeBorder(
            resized, top, size - nh - top, left, size - nw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114)
        )
        return canvas, scale, left, top

    def prepare(self, rgb):
        canvas, scale, left, top = self.letterbox(rgb)
        return canvas.astype(np.float32).transpose(2, 0, 1) / 255.0, (scale, left, top)

    def decode(self, output, geometry):
        scale, left, top = geometry
        pred = output.T  # (anchors, 56)
        scores = pred[:, 4]
        keep = np.nonzero(scores >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        cand = pred[keep]
        xywh = np.stack([cand[:, 0] - cand[:, 2] / 2, cand[:, 1] - cand[:, 3] / 2, cand[:, 2], cand[:, 3]], 1)
        chosen = cv2.dnn.NMSBoxes(xywh.tolist(), cand[:, 4].tolist(), self.score_threshold, self.iou_threshold)
        chosen = np.asarray(chosen, dtype=int).reshape(-1)[: self.max_persons]
        people = []
        for i in chosen:
            kp = cand[i, 5:].reshape(17, 3).astype(np.float32).copy()
            kp[:, 0] = (kp[:, 0] - left) / scale
            kp[:, 1] = (kp[:, 1] - top) / scale
            people.append((np.nan_to_num(kp), float(cand[i, 4])))
        return people


class MoveNetMultiPose(_OnnxPose):
    """MoveNet MultiPose Lightning through onnxruntime: up to 6 people a frame, COCO-17, in one pass."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        max_persons: int = 6,
        score_threshold: float = 0.15,
        input_size: int = 256,
        device: str = "cpu",
    ):
        super().__init__(model_path, device)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or list(outputs[0].shape[-2:]) != [6, 56]:
            raise DataError(model_path, "not a MoveNet MultiPose model (uint8 image in, 1 × 6 × 56 out)")
        self.max_persons = max_persons
        self.score_threshold = score_threshold
        self.input_size = input_size

    def letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """The image scaled so its longer side is ``input_size``, padded with zeros bottom and right to multiples
        of 32 (as the model was trained); returns (canvas, scale)."""
        h, w = rgb.shape[:2]
        scale = self.input_size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        canvas = np.zeros((ph, pw, 3), np.uint8)
        canvas[:nh, :nw] = resized
        return canvas, scale

    def prepare(self, rgb):
        canvas, scale = self.letterbox(rgb)
        return canvas, (scale, *canvas.shape[:2])

    def decode(self, output, geometry):
        scale, ph, pw = geometry
        slots = output  # (6, 56)
        people = []
        for slot in slots[np.argsort(-slots[:, 55])]:
            if slot[55] < self.score_threshold or len(people) >= self.max_persons:
                break
            yxs = slot[:51].reshape(17, 3)
            kp = np.empty((17, 3), np.float32)
            kp[:, 0] = yxs[:, 1] * pw / scale  # normalised to the padded input → the video's pixels
            kp[:, 1] = yxs[:, 0] * ph / scale
            kp[:, 2] = yxs[:, 2]
            people.append((np.nan_to_num(kp), float(slot[55])))
        return people


def resolve_pose_model(backend: str, explicit: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(model file, its SHA-256) for a backend: where each looks is its resolver's."""
    resolvers = {"mediapipe": resolve_mediapipe_model, "movenet": resolve_movenet_model, "onnx": resolve_onnx_model}
    if backend not in resolvers:
        raise ValueError(f"unknown pose backend {backend!r}: {', '.join(resolvers)}")
    path = resolvers[backend](explicit)
    return path, file_sha256(path)


def create_pose_model(params: dict, device: str = "cpu"):
    """The backend a pose run's parameters name (model path already resolved into ``params``), on ``device`` (the
    ONNX backends; MediaPipe runs on the CPU)."""
    if params["backend"] == "mediapipe":
        if device != "cpu":
            raise DataError(f"--device {device}", "the mediapipe backend runs on the CPU (GPU: movenet or onnx)")
        return MediaPipePose(params["model"], max_persons=params["max_persons"])
    if params["backend"] == "onnx":
        return OnnxYoloPose(params["model"], max_persons=params["max_persons"], device=device)
    if params["backend"] == "movenet":
        return MoveNetMultiPose(params["model"], max_persons=params["max_persons"], device=device)
    raise ValueError(f"unknown pose backend {params['backend']!r}")


MODEL_ENVS = {"mediapipe": MODEL_ENV, "movenet": MOVENET_MODEL_ENV, "onnx": ONNX_MODEL_ENV}


def recorded_model(params: dict, *, also=()) -> dict:
    """Pose parameters a run recorded, with their model file found on this machine: the first of ``also`` (a model
    bundle's own copy), the recorded path, $DANCE_*_MODEL of its backend, shared/models and the user cache (each by
    the recorded file's name) whose SHA-256 is the recorded one. A file of that name with another SHA-256 is refused
    by name (another model would give other skeletons than the run was trained on); none found: a named error."""
    sha, recorded = params.get("model_sha256"), params.get("model")
    if not sha or not recorded:
        return params  # (imported skeletons: no model to find)
    name = Path(str(recorded)).name
    env = MODEL_ENVS.get(params.get("backend"), MODEL_ENV)
    found, mismatched, looked = find_model_by_sha256(sha, name, first=[*also, recorded], env=env)
    if found is not None:
        return {**params, "model": str(found.resolve())}
    if mismatched:
        raise DataError(
            mismatched[0],
            f"pose model SHA-256 differs from the one the run was trained with ({sha[:12]}…): another {name}",
        )
    looked = "; ".join(map(str, looked))
    raise DataError(
        name,
        f"pose model not found (SHA-256 {sha[:12]}…): put it in {shared_dir() / 'models'} or set "
        f"${env} (looked in: {looked})",
    )
