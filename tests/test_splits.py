from collections import Counter, defaultdict

import numpy as np
import pytest

from preprocess.dataset import SPLITS, grouped_split, make_split, parse_ratios, stratified_split


def _dataset(n_classes=5, per_class=20):
    ids, labels = [], []
    for c in range(n_classes):
        for i in range(per_class):
            ids.append(f"c{c}_v{i:03d}")
            labels.append(f"class{c}")
    return ids, labels


def test_parse_ratios():
    assert parse_ratios("0.8,0.1,0.1") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_ratios("70/15/15") == pytest.approx((0.7, 0.15, 0.15))
    with pytest.raises(ValueError):
        parse_ratios("0.5,0.5")
    with pytest.raises(ValueError):
        parse_ratios("1,-1,1")


def test_stratified_split_gives_each_class_its_exact_share():
    ids, labels = _dataset(n_classes=4, per_class=23)
    split = stratified_split(ids, labels, (0.8, 0.1, 0.1), seed=3)
    assert set(split) == set(ids)
    per = Counter((lab, split[v]) for v, lab in zip(ids, labels))
    for c in set(labels):
        # 23 * (0.8, 0.1, 0.1) = 18.4, 2.3, 2.3 -> largest remainder 19, 2, 2 (ties broken by split order)
        assert [per[(c, s)] for s in SPLITS] == [19, 2, 2]


def test_small_classes_still_reach_every_split():
    ids, labels = _dataset(n_classes=3, per_class=4)
    split = stratified_split(ids, labels, (0.8, 0.1, 0.1), seed=0)
    per = Counter((lab, split[v]) for v, lab in zip(ids, labels))
    for c in set(labels):
        assert all(per[(c, s)] >= 1 for s in SPLITS)


def test_split_is_deterministic_and_order_free():
    ids, labels = _dataset()
    a = make_split(ids, labels, None, seed=11)
    order = np.random.default_rng(0).permutation(len(ids))
    b = make_split([ids[i] for i in order], [labels[i] for i in order], None, seed=11)
    assert a == b
    c = make_split(ids, labels, None, seed=12)
    assert a != c


def test_grouped_split_never_straddles_and_stays_stratified():
    rng = np.random.default_rng(5)
    ids, labels, groups = [], [], []
    # 30 "source videos", each with 2-6 clips of one class (Let's Dance: many clips per YouTube video)
    for g in range(30):
        label = f"class{g % 5}"
        for k in range(rng.integers(2, 7)):
            ids.append(f"yt{g:02d}_{k}")
            labels.append(label)
            groups.append(f"yt{g:02d}")
    split = grouped_split(ids, labels, groups, (0.6, 0.2, 0.2), seed=1)
    by_group = defaultdict(set)
    for v, g in zip(ids, groups):
        by_group[g].add(split[v])
    assert all(len(s) == 1 for s in by_group.values())
    # every class is present in every split, and train holds roughly its share of clips
    per = Counter((lab, split[v]) for v, lab in zip(ids, labels))
    for c in set(labels):
        assert all(per[(c, s)] > 0 for s in SPLITS)
    train_share = sum(split[v] == "train" for v in ids) / len(ids)
    assert 0.45 < train_share < 0.75


def test_grouped_split_with_groups_spanning_classes_fills_every_split():
    # Weizmann-like: 6 performers, each performs every class
    ids, labels, groups = [], [], []
    for p in range(6):
        for c in range(4):
            for side in "ab":
                ids.append(f"p{p}_c{c}_{side}")
                labels.append(f"c{c}")
                groups.append(f"p{p}")
    for seed in range(5):
        split = grouped_split(ids, labels, groups, (0.8, 0.1, 0.1), seed=seed)
        per_split_groups = defaultdict(set)
        for v, g in zip(ids, groups):
            per_split_groups[split[v]].add(g)
        assert all(per_split_groups[s] for s in SPLITS)
        assert sum(len(v) for v in per_split_groups.values()) == 6  # no performer in two splits
    assert grouped_split(ids, labels, groups, seed=2) == grouped_split(ids, labels, groups, seed=2)
