"""Benchmarks behind ``bin/benchmark``: the figures of BENCHMARKS.md, rerunnable anywhere, one module per group.

::

    common.py                 shared assets, running bin/preprocess as a user does, copy datasets
    preprocess_throughput.py  flow and pose frames/s: bare loops vs bin/preprocess, 1 vs 2 workers
    memory.py                 peak RSS of the preprocessors on a long 1080p video vs a short one
    pose_accuracy.py          pose backends on COCO ground truth (OKS) and synthetic ground truth (PCK)
    training.py               data loader vs model clips/s per stream
    flow_engines.py           Farneback pairs/s: OpenCV on 1 and all cores vs the PyTorch port

Each function measures everything it compares in one run, so ratios compare like with like on a noisy machine, and
reports through ``log`` (one line per figure).
"""
