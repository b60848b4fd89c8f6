"""Datasets: discovery and ingest of the accepted layouts, the manifest, splits; and (``synthetic/``) a generator of
a synthetic dance dataset, which makes a dataset rather than reading one (as torchvision.datasets holds FakeData).

::

    ingest.py    folder per class (videos or frame images, Let's Dance naming), CSV; probe, check, split
    manifest.py  Manifest, VideoRecord: WORK/manifest.json, the contract of every later stage
    splits.py    stratified and group-aware train/val/test splits
    synthetic/   bin/synth: procedurally animated dancers with COCO-17 ground truth
"""

from .ingest import ingest, manifest_for, names_a_manifest
from .manifest import MANIFEST_NAME, Manifest, VideoRecord, load_manifest
from .splits import SPLITS, grouped_split, make_split, parse_ratios, stratified_split

__all__ = [
    "MANIFEST_NAME",
    "SPLITS",
    "Manifest",
    "VideoRecord",
    "grouped_split",
    "ingest",
    "load_manifest",
    "make_split",
    "manifest_for",
    "names_a_manifest",
    "parse_ratios",
    "stratified_split",
]
