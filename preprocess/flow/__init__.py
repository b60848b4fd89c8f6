"""Optical flow: Farneback engines (OpenCV, and a batched PyTorch port for GPUs), the batch preprocessor, quantised
storage, pictures, denseflow export and accuracy against ground truth.

::

    farneback.py        FarnebackParams: cv2.calcOpticalFlowFarneback's parameters, the OpenCV engine
    farneback_torch.py  farneback_torch: the same algorithm in PyTorch, batched over frame pairs (imported on
                        its own: it loads torch; also as preprocess.farneback_torch)
    camera.py           camera-motion compensation (median, RANSAC homography)
    task.py             flow_params, flow_task: one video in, WORK/flow/<id>.npy out
    storage.py          quantize / dequantize, load_flow, FlowInfo
    visualize.py        colour wheel, PNG sheets, mp4
    export.py           mmaction2/denseflow JPEG layout
    evaluate.py         Middlebury .flo, end-point error
"""

from .camera import CAMERA_MOTIONS, camera_motion, compensate
from .evaluate import end_point_error, read_middlebury_flo
from .farneback import FarnebackParams
from .storage import FLOW_VERSION, FlowInfo, checked_params, dequantize, load_flow, quantize, stored_params, to_pixels
from .task import compute_video_flow, flow_params, flow_task

__all__ = [
    "CAMERA_MOTIONS",
    "camera_motion",
    "compensate",
    "FLOW_VERSION",
    "FarnebackParams",
    "checked_params",
    "compute_video_flow",
    "dequantize",
    "end_point_error",
    "FlowInfo",
    "flow_params",
    "flow_task",
    "load_flow",
    "quantize",
    "read_middlebury_flo",
    "stored_params",
    "to_pixels",
]
