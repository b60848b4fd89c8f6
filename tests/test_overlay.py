"""Overlay videos (fusion.overlay)."""

from __future__ import annotations


def test_overlay_names_are_unique_for_videos_that_share_a_name():
    from fusion.overlay import overlay_names

    names = overlay_names(["a/clip.mp4", "b/clip.mp4", "c/other.mp4"])
    assert names["c/other.mp4"] == "other_overlay.mp4"
    assert names["a/clip.mp4"] == "a_clip_overlay.mp4" and names["b/clip.mp4"] == "b_clip_overlay.mp4"
