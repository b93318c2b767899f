"""Captions generated from an object's parameters.

Each category turns its parameters into *facts*; a fact has phrasings used
after "with" (``with_``: "a tall back", "a high backrest") and optionally
adjectives (``adj``: "high-backed"). A caption = a template filled with the
main colour, a noun for the category and zero to two facts, each phrasing
chosen at random. Training and evaluation use disjoint template sets
(:data:`TRAIN_TEMPLATES`, :data:`HELDOUT_TEMPLATES`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .palette import COLOR_WORDS

NUM = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}

# every noun a caption may use for a category (tests check one of them appears)
CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "chair": ("chair", "armchair"),
    "table": ("table", "coffee table", "dining table"),
    "mug": ("mug", "coffee mug", "cup"),
    "lamp": ("lamp", "table lamp", "desk lamp", "floor lamp", "standing lamp"),
    "vase": ("vase", "flower vase"),
    "bottle": ("bottle", "wine bottle", "soda bottle"),
    "mushroom": ("mushroom", "toadstool"),
    "tree": ("tree", "pine tree", "fir tree"),
    "house": ("house", "cottage"),
    "rocket": ("rocket", "rocket ship", "spaceship"),
    "car": ("car", "sedan", "sports car", "pickup truck", "van"),
    "snowman": ("snowman",),
}


@dataclass
class Fact:
    with_: tuple[str, ...]  # phrasings after "with"
    adj: tuple[str, ...] = ()  # adjective phrasings (before the noun)
    group: str = ""  # facts of one group are never combined in the "with" part


# facts a noun already states (not repeated next to it)
NOUN_IMPLIES = {"armchair": "arms"}


def _facts_chair(p):
    f = []
    if p["back_height"] == "tall":
        f.append(Fact(("a tall back", "a high backrest", "a tall backrest"), ("high-backed", "tall-backed"), "back"))
    else:
        f.append(Fact(("a short back", "a low backrest"), ("low-backed",), "back"))
    f.append({
        "solid": Fact(("a solid back", "a solid backrest"), (), "back"),
        "slatted": Fact(("a slatted back", "vertical slats in the back"), ("slat-back",), "back"),
        "ladder": Fact(("a ladder back", "horizontal rails in the back"), ("ladder-back",), "back"),
    }[p["back_style"]])
    t = p["leg_thickness"]
    t2 = "slender" if t == "thin" else "sturdy"
    f.append(Fact((f"four {t} legs", f"4 {t} legs", f"four {t2} {p['leg_shape']} legs"), ("four-legged",)))
    if p["arms"]:
        f.append(Fact(("armrests", "two armrests"), (), "arms"))
    if p["cushion_color"]:
        c = p["cushion_color"]
        f.append(Fact((f"a {c} cushion", f"a {c} seat cushion")))
    return f


def _facts_table(p):
    f = []
    shape = p["top_shape"]
    f.append({
        "round": Fact(("a round top", "a circular top"), ("round", "circular")),
        "rectangular": Fact(("a rectangular top", "a long rectangular top"), ("rectangular", "long")),
        "square": Fact(("a square top",), ("square",)),
    }[shape])
    f.append(Fact((), ("low",)) if p["height"] == "low" else Fact((), ("tall",)))
    c = p["leg_color"]
    if p["legs"] == "four legs":
        t = p["leg_thickness"]
        if c:
            f.append(Fact((f"four {t} {c} legs", f"{c} legs", f"4 {c} legs"), ("four-legged",)))
        else:
            f.append(Fact((f"four {t} legs", f"4 {t} legs"), ("four-legged",)))
    elif c:
        f.append(Fact((f"a single {c} pedestal", f"a {c} central pedestal"), ("pedestal",)))
    else:
        f.append(Fact(("a single pedestal", "a central pedestal leg", "one central leg"), ("pedestal",)))
    return f


def _facts_mug(p):
    f = [Fact((), ("tall",)) if p["proportion"] == "tall" else Fact((), ("short", "squat", "small"))]
    if p["handle"] == "round":
        f.append(Fact(("a round handle", "a curved handle", "a handle")))
    else:
        f.append(Fact(("a square handle", "an angular handle")))
    if p["stripe_color"]:
        c = p["stripe_color"]
        f.append(Fact((f"a {c} stripe", f"a {c} band around it")))
    return f


def _facts_lamp(p):
    f = [{
        "cone": Fact(("a conical shade", "a cone-shaped lampshade")),
        "drum": Fact(("a drum shade", "a cylindrical shade")),
        "dome": Fact(("a dome shade", "a rounded dome shade")),
    }[p["shade"]]]
    f.append(Fact((f"a {p['base_shape']} base",), (), "stand"))
    if p["lamp_type"] == "floor":
        f.append(Fact(("a long pole", "a tall thin pole"), ("tall",)))
    else:
        f.append(Fact(("a short stem",), ("small",)))
    if p["stand_color"]:
        c = p["stand_color"]
        f.append(Fact((f"a {c} stand", f"a {c} pole and base"), (), "stand"))
    return f


def _facts_vase(p):
    f = [{
        "round": Fact(("a round body", "a wide belly"), ("round", "bulbous")),
        "slender": Fact(("a slender neck", "a narrow body"), ("slender", "tall narrow")),
        "flared": Fact(("a flared rim", "a wide flared top"), ("flared", "trumpet-shaped")),
    }[p["style"]]]
    if p["handles"]:
        f.append(Fact(("two handles", "two small handles")))
    if p["band_color"]:
        c = p["band_color"]
        f.append(Fact((f"a {c} band", f"a {c} stripe")))
    return f


def _facts_bottle(p):
    f = [{
        "wine": Fact(("a long neck", "a long thin neck"), ("tall",)),
        "soda": Fact(("a short neck", "a rounded shoulder")),
        "square": Fact(("a square body", "flat square sides"), ("square",)),
    }[p["style"]]]
    if p["closure"] == "cap":
        c = p["closure_color"]
        f.append(Fact((f"a {c} cap", f"a {c} screw cap")))
    elif p["closure"] == "cork":
        f.append(Fact(("a cork", "a cork stopper"), ("corked",)))
    if p["label_color"]:
        f.append(Fact((f"a {p['label_color']} label",), ("labelled",)))
    return f


def _facts_mushroom(p):
    f = [{
        "dome": Fact(("a dome-shaped cap", "a round cap"), ("round-capped",)),
        "flat": Fact(("a flat cap", "a wide flat cap"), ("flat-capped",)),
        "conical": Fact(("a pointed cap", "a conical cap"), ("pointy",)),
    }[p["cap"]]]
    if p["spots"]:
        c = p["spot_color"]
        f.append(Fact((f"{c} spots", f"{c} dots on the cap"), ("spotted",)))
    if p["count"] == 2:
        f.append(Fact(("a smaller mushroom beside it", "a little mushroom next to it")))
    f.append(Fact((f"a {p['stem_color']} stem", f"a {p['stem_color']} stalk")))
    return f


def _facts_tree(p):
    f = []
    if p["style"] == "pine":
        n = NUM[p["tiers"]]
        f.append(Fact((f"{n} tiers of branches", f"{n} layers of needles"), ("evergreen", "conical")))
    elif p["style"] == "round":
        f.append(Fact(("a round crown", "a round canopy"), ("round", "leafy")))
    else:
        f.append(Fact(("a bushy crown", "clumps of leaves"), ("bushy", "fluffy")))
    f.append(Fact((f"a {p['trunk_color']} trunk",)))
    if p["fruit_color"]:
        c = p["fruit_color"]
        f.append(Fact((f"{c} fruit", f"{c} apples")))
    return f


def _facts_house(p):
    f = [Fact(("one floor",), ("one-story", "small")) if p["floors"] == 1 else Fact(("two floors",), ("two-story",))]
    rc = p["roof_color"]
    f.append({
        "gable": Fact((f"a {rc} gabled roof", f"a {rc} pitched roof", f"a {rc} roof")),
        "pyramid": Fact((f"a {rc} pyramid roof", f"a {rc} hipped roof", f"a {rc} roof")),
        "flat": Fact((f"a {rc} flat roof",), ("flat-roofed",)),
    }[p["roof"]])
    f.append(Fact((f"a {p['door_color']} door", f"a {p['door_color']} front door")))
    n = p["windows"]
    if n:
        f.append(Fact((f"{NUM.get(n, n)} front windows" if n > 1 else "one front window", f"{p['window_color']} windows")))
    if p["chimney"]:
        f.append(Fact(("a chimney",)))
    return f


def _facts_rocket(p):
    nc = p["nose_color"]
    if p["nose"] == "pointed":
        f = [Fact(("a pointed nose cone", "a sharp nose") + ((f"a {nc} nose cone",) if nc else ()))]
    else:
        f = [Fact(("a rounded nose", "a round nose cone") + ((f"a {nc} rounded nose",) if nc else ()))]
    n = NUM[p["fins"]]
    fc = p["fin_color"]
    f.append(Fact((f"{n} fins",) + ((f"{n} {fc} fins", f"{fc} fins") if fc else ()), (f"{n}-finned",)))
    w = p["windows"]
    if w:
        f.append(Fact(("a round window", "a porthole") if w == 1 else (f"{NUM[w]} round windows", f"{NUM[w]} portholes")))
    if p["boosters"]:
        f.append(Fact(("two side boosters", "two boosters")))
    return f


def _facts_car(p):
    f = []
    if p["big_wheels"]:
        f.append(Fact(("big wheels", "large wheels"), ("lifted",)))
    else:
        f.append(Fact(("four wheels", f"four {p['wheel_color']} wheels")))
    f.append(Fact((f"{p['window_color']} windows", f"{p['window_color']} tinted windows")))
    if p["kind"] == "sports car":
        f.append(Fact(("a low roof", "a sleek low body"), ("sleek", "low")))
    elif p["kind"] == "van":
        f.append(Fact(("a tall boxy body", "a high roof"), ("boxy",)))
    elif p["kind"] == "pickup":
        f.append(Fact(("an open cargo bed", "a cargo bed")))
    return f


def _facts_snowman(p):
    n = NUM[p["balls"]]
    f = [Fact((f"{n} snowballs", f"{n} stacked balls"), (f"{n}-tier",)), Fact(("a carrot nose",))]
    if p["hat"] == "top hat":
        f.append(Fact((f"a {p['hat_color']} top hat", f"a {p['hat_color']} hat")))
    elif p["hat"] == "beanie":
        f.append(Fact((f"a {p['hat_color']} beanie", f"a {p['hat_color']} wool hat")))
    if p["buttons"]:
        f.append(Fact((f"{NUM[p['buttons']]} buttons",)))
    if p["arms"]:
        f.append(Fact(("stick arms", "twig arms")))
    if p["scarf_color"]:
        f.append(Fact((f"a {p['scarf_color']} scarf",)))
    return f


_FACTS = {
    "chair": _facts_chair, "table": _facts_table, "mug": _facts_mug, "lamp": _facts_lamp,
    "vase": _facts_vase, "bottle": _facts_bottle, "mushroom": _facts_mushroom, "tree": _facts_tree,
    "house": _facts_house, "rocket": _facts_rocket, "car": _facts_car, "snowman": _facts_snowman,
}


def facts(category: str, params: dict) -> list[Fact]:
    return _FACTS[category](params)


def nouns(category: str, params: dict) -> tuple[str, ...]:
    """Nouns that fit this particular object (subset of CATEGORY_NOUNS)."""
    if category == "chair":
        return ("chair", "armchair") if params["arms"] else ("chair",)
    if category == "table":
        return ("table", "coffee table") if params["height"] == "low" else ("table", "dining table")
    if category == "lamp":
        return ("lamp", "floor lamp", "standing lamp") if params["lamp_type"] == "floor" else ("lamp", "table lamp", "desk lamp")
    if category == "bottle":
        extra = {"wine": ("wine bottle",), "soda": ("soda bottle",)}.get(params["style"], ())
        return ("bottle",) + extra
    if category == "tree":
        return ("tree", "pine tree", "fir tree") if params["style"] == "pine" else ("tree",)
    if category == "car":
        return {"sedan": ("car", "sedan"), "pickup": ("pickup truck", "car"), "van": ("van", "car"),
                "sports car": ("sports car", "car")}[params["kind"]]
    return CATEGORY_NOUNS[category]


# ---- templates -----------------------------------------------------------------------
# Placeholders: {color} {noun} {adj} {with} (one or two facts joined by "and"),
# {with1} (exactly one fact), {list} (comma list of bare facts). "A/an" is fixed up
# afterwards ("a orange" -> "an orange").
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {color} {noun}",
    "a {color} {noun} with {with}",
    "a {adj} {color} {noun}",
    "a {adj} {color} {noun} with {with1}",
    "{color} {noun}, {list}",
    "a {noun} in {color} with {with}",
    "a {color} colored {noun}",
    "3D model of a {color} {noun} with {with}",
    "a {color} {noun} that has {with}",
    "{color} {adj} {noun}",
    "{adj} {noun} in {color}",
    "a {color} {noun} featuring {with1}",
)
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a {noun} painted {color}, with {with}",
    "{color} {noun} having {with1}",
    "render of a {adj} {noun}, colored {color}",
    "the {noun} is {color} and has {with}",
    "{noun} ({color}) with {with1}",
)


def templates(split: str) -> tuple[str, ...]:
    return HELDOUT_TEMPLATES if split == "heldout" else TRAIN_TEMPLATES


def _bare(phrase: str) -> str:
    for art in ("a ", "an "):
        if phrase.startswith(art):
            return phrase[len(art):]
    return phrase


def _fix_articles(text: str) -> str:
    words = text.split(" ")
    out = []
    for i, w in enumerate(words):
        if w.lower() in ("a", "an") and i + 1 < len(words):
            nxt = words[i + 1].lstrip("(").lower()
            vowel = nxt[:1] in "aeio" or nxt.startswith("u") and not nxt.startswith("un")
            w = ("An" if w[0] == "A" else "an") if vowel else ("A" if w[0] == "A" else "a")
            if nxt.startswith("one"):
                w = "A" if w[0] == "A" else "a"
        out.append(w)
    return " ".join(out)


def make_caption(category: str, color: str, params: dict, rng: np.random.Generator, split: str = "train",
                 template: int | None = None) -> str:
    """One caption for an object. `template` forces a template index of the split's list."""
    return caption_and_template(category, color, params, rng, split, template)[0]


def caption_and_template(category: str, color: str, params: dict, rng: np.random.Generator, split: str = "train",
                         template: int | None = None) -> tuple[str, str]:
    """(caption, template it was made from)."""
    fs = facts(category, params)
    with_facts = [f for f in fs if f.with_]
    adj_facts = [f for f in fs if f.adj]
    tpls = templates(split)
    usable = [i for i, t in enumerate(tpls)
              if ("{adj}" not in t or adj_facts)
              and (("{with" not in t and "{list}" not in t) or with_facts)]
    idx = template if template is not None else usable[int(rng.integers(len(usable)))]
    t = tpls[idx]
    noun_opts = nouns(category, params)
    noun = noun_opts[int(rng.integers(len(noun_opts)))]
    cw = COLOR_WORDS[color]
    cword = cw[int(rng.integers(len(cw)))]

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    adj_ok = [f for f in adj_facts if f.group != NOUN_IMPLIES.get(noun)]
    adj_fact = pick(adj_ok) if adj_ok else None
    adj = pick(adj_fact.adj) if adj_fact else ""
    pool = [f for f in with_facts if f is not adj_fact and f.group != NOUN_IMPLIES.get(noun)] or with_facts
    chosen, groups = [], set()
    for i in (rng.permutation(len(pool)) if pool else []):
        f = pool[int(i)]
        if f.group and f.group in groups:
            continue
        groups.add(f.group)
        chosen.append(f)
    k = 1 if len(chosen) < 2 or rng.random() < 0.45 else 2
    phrases = [pick(f.with_) for f in chosen[:k]]
    with_ = " and ".join(phrases)
    with1 = phrases[0] if phrases else ""
    lst = ", ".join(_bare(p) for p in phrases)
    text = t.format(color=cword, noun=noun, adj=adj, with_=with_, list=lst, with1=with1, **{"with": with_})
    text = " ".join(text.split())
    return _fix_articles(text), t
