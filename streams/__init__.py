"""Arrays in, per-video scores out: the RGB, flow and pose stream networks and their training.

Reads what ``preprocess`` wrote into a work directory (manifest, frames, flow, pose) and writes per-video score files
(``RUN/scores_<split>.npz``) that ``fusion`` reads. Never imports MediaPipe, so it runs on GPU machines without it.
"""
