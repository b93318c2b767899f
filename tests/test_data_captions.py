"""Captions and the train / held-out split."""
import re

import numpy as np

from trellis_lab.data.captions import (CATEGORY_NOUNS, HELDOUT_TEMPLATES, TRAIN_TEMPLATES, caption_and_template,
                                           make_caption)
from trellis_lab.data.palette import COLOR_NAMES, COLOR_WORDS
from trellis_lab.data.shapes import CATEGORIES, sample_object, sample_spec
from trellis_lab.data.splits import HELDOUT_PAIRS, allowed_colors


def _mentions(caption, words):
    return any(re.search(r"\b" + re.escape(w) + r"\b", caption) for w in words)


def test_captions_mention_category_and_colour():
    for split in ("train", "heldout"):
        for seed in range(60):
            obj = sample_object(seed, split)
            for cap in [obj.caption()] + obj.captions(3):
                assert _mentions(cap, CATEGORY_NOUNS[obj.category]), (split, cap)
                assert _mentions(cap, COLOR_WORDS[obj.color]), (split, cap)
                assert "  " not in cap and "{" not in cap and not cap.endswith(" ")
                assert not re.search(r"\ba (?!one)[aeio]", cap), cap  # article fixed up


def test_captions_vary_and_are_deterministic():
    obj = sample_object(5)
    caps = obj.captions(12)
    assert len(set(caps)) >= 5
    assert caps == sample_object(5).captions(12)


def test_several_phrasings_per_fact():
    rng = np.random.default_rng(0)
    params = dict(back_height="tall", back_style="solid", leg_count=4, leg_thickness="thin", leg_shape="round",
                  arms=False, cushion_color=None)
    caps = {make_caption("chair", "red", params, rng) for _ in range(200)}
    back = {c for c in caps if "back" in c}
    assert any("tall back" in c for c in back) and any("high" in c for c in back)
    assert any("four thin legs" in c for c in caps) and any("four-legged" in c for c in caps)


def test_heldout_split_is_disjoint_from_train():
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    for cat in CATEGORIES:
        tr, ho = set(allowed_colors(cat, "train")), set(allowed_colors(cat, "heldout"))
        assert tr and ho and not tr & ho and tr | ho == set(COLOR_NAMES)
    # every colour and every category is still seen in training
    seen_colors = {c for cat in CATEGORIES for c in allowed_colors(cat, "train")}
    assert seen_colors == set(COLOR_NAMES)
    for seed in range(300):
        cat, color = sample_spec(seed, "train")
        assert (cat, color) not in HELDOUT_PAIRS
        cat, color = sample_spec(seed, "heldout")
        assert (cat, color) in HELDOUT_PAIRS
    used = {"train": set(), "heldout": set()}
    for seed in range(80):
        for split in ("train", "heldout"):
            obj = sample_object(seed, split)
            rng = np.random.default_rng(seed)
            for _ in range(3):
                _, t = caption_and_template(obj.category, obj.color, obj.params, rng, split)
                used[split].add(t)
    assert used["train"] <= set(TRAIN_TEMPLATES) and used["heldout"] <= set(HELDOUT_TEMPLATES)
    assert len(used["train"]) == len(TRAIN_TEMPLATES) and len(used["heldout"]) == len(HELDOUT_TEMPLATES)


def test_heldout_covers_all_pairs():
    seen = {sample_spec(s, "heldout") for s in range(400)}
    assert seen == set(HELDOUT_PAIRS)
