"""Skeletons: COCO-17 keypoint conventions, estimator backends, tracking, normalisation, the batch preprocessor,
importers of skeletons made elsewhere, and accuracy against ground truth.

::

    keypoints.py  COCO-17 names, flip pairs, other skeletons' index maps, OKS constants
    normalize.py  bounding-box normalisation into [-1, 1]
    backends.py   MediaPipe PoseLandmarker and ONNX YOLO-pose; model file resolution
    tracking.py   duplicate removal and slot tracking over frames
    task.py       pose_params, pose_task: one video in, WORK/pose/<id>.npz out
    storage.py    the stored arrays, load_pose, PoseInfo
    importers.py  Let's Dance, OpenPose and COCO files into the stored format
    export.py     the stored skeletons out to pyskl / mmaction2 annotation files
    evaluate.py   PCK on videos, OKS on COCO images
"""

from .keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS, flip_permutation
from .normalize import normalize_to_box
from .storage import PersonsInfo, PoseInfo, load_pose
from .task import POSE_VERSION, estimate_video_pose, pose_params, pose_task
from .tracking import SlotTracker, clean_detections, track_sequence

__all__ = [
    "COCO_FLIP_PAIRS",
    "COCO_KEYPOINTS",
    "POSE_VERSION",
    "SlotTracker",
    "clean_detections",
    "estimate_video_pose",
    "flip_permutation",
    "load_pose",
    "normalize_to_box",
    "PersonsInfo",
    "PoseInfo",
    "pose_params",
    "pose_task",
    "track_sequence",
]
