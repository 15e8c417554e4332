"""Drawing one synthetic person's 7 photos with PIL (head, shoulders, background, the mask states), and writing them.

One concern, the picture, in one file (~630 lines): the face, its gender and age cues and the
four mask styles share the person's parameters and geometry.
"""
from __future__ import annotations

import hashlib
import io
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from .plan import JPEG_QUALITY, STEMS


def _person_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(split), int(index), 104729]))


def _clip(x, lo, hi):
    return float(min(hi, max(lo, x)))


def _mix(c1, c2, t):
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(c1, c2))


def _shade(c, f):
    return tuple(int(_clip(round(v * f), 0, 255)) for v in c)


def _rand_colour(rng, lo=20, hi=235):
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _room_colour(rng, lo=70.0, hi=240.0, vivid=0.2):
    """Mostly muted colours (walls, doors, clothes): a grey level tinted a little, sometimes more."""
    level = rng.uniform(lo, hi)
    sat = rng.uniform(0.25, 0.65) if rng.random() < vivid else rng.uniform(0.0, 0.2)
    hue = rng.uniform(0, 2 * np.pi)
    tint = np.cos(hue - np.array([0.0, 2.094, 4.189]))
    return tuple(int(v) for v in np.clip(level * (1 + sat * tint), 0, 255))


_MASK_COLOURS = [
    (150, 195, 225), (160, 205, 230), (236, 238, 240), (245, 245, 245), (35, 35, 38), (28, 30, 45),
    (120, 125, 130), (225, 180, 190), (205, 190, 165), (60, 75, 120), (90, 120, 95), (170, 40, 45),
]
_BANDANA_COLOURS = [(175, 30, 35), (30, 45, 110), (25, 25, 28), (60, 95, 60), (200, 120, 30)]


def person_params(rng: np.random.Generator, gender: int, age: int, H: int, W: int) -> dict:
    """Everything that makes one person look like themself (drawn once per person).

    Args:
        rng: the person's generator (consumed: the order of draws is part of the output).
        gender: 0 male, 1 female (the drawn gender).
        age: the drawn age in years (age cues are continuous in it).
        H: image height in pixels.
        W: image width in pixels (geometry scales with ``min(H / 512, W / 384)``).

    Returns:
        A dict of the person's parameters (geometry, skin, hair, gendered and age cues,
        clothes, background, the 5 worn masks and the incorrectly worn one), read by the
        drawing functions.
    """
    s = min(H / 512, W / 384)
    male = gender == 0
    P: dict = {"s": s, "H": H, "W": W, "male": male, "age": age}
    # ---- age cues: continuous in the age number, with person-level noise
    t = _clip((age - 18) / 42, 0, 1.5)
    P["wrinkle"] = _clip(((age - 22) / 40) ** 1.3 if age > 22 else 0.0, 0, 1.4) + rng.normal(0, 0.1)
    P["grey"] = _clip(1 / (1 + math.exp(-(age - 50) / 5.5)) * rng.uniform(0.55, 1.1) + rng.normal(0, 0.04), 0, 1)
    P["bags"] = _clip(t * 0.9 + rng.normal(0, 0.15), 0, 1.3)
    P["spots"] = max(0, int(round((P["wrinkle"] - 0.55) * 14 + rng.normal(0, 1.5))))
    # ---- geometry (face half-width a, half-height b)
    scale = rng.uniform(0.86, 1.1)
    b = 104 * s * scale
    ratio = rng.normal(0.80 if male else 0.755, 0.04)
    a = b * ratio
    P["a"], P["b"] = a, b
    P["jaw"] = _clip(rng.normal(0.62 if male else 0.40, 0.17), 0, 1)  # squareness of the lower face
    P["chin"] = _clip(rng.normal(0.35 if male else 0.55, 0.15), 0, 1)  # pointiness
    margin = a * 1.3
    cx = W / 2 + rng.normal(0, 0.055 * W)
    P["cx"] = _clip(cx, margin, W - margin) if W > 2 * margin else W / 2
    cy = H * rng.uniform(0.38, 0.46)
    P["cy"] = _clip(cy, b * 1.3, H - b * 1.25) if H > 2.55 * b else H / 2
    P["tilt"] = rng.normal(0, 3.0)  # degrees, the whole head (person-level pose)
    # ---- skin (Asian skin tones), darker / warmer with age
    base = np.array([226, 188, 160], float) + rng.normal(0, 2.5, 3) + rng.normal(0, 1) * np.array([0, 4, 9])
    light = rng.normal(0, 0.055) - 0.075 * t + (0.02 if not male else -0.01)
    skin = base * (1 + light) + np.array([4, -2, -8]) * t
    P["skin"] = tuple(int(v) for v in np.clip(skin, 60, 250))
    # ---- hair
    hb = rng.choice([0, 0, 0, 1, 2]) if not male else rng.choice([0, 0, 0, 0, 1])
    hair = [(28, 24, 22), (55, 40, 30), (95, 65, 40)][hb]
    hair = _shade(hair, rng.uniform(0.8, 1.25))
    P["hair_base"] = hair
    P["hair"] = _mix(hair, (175, 172, 168), P["grey"] * 0.85)
    if male:
        length = rng.uniform(0.35, 0.85) if rng.random() < 0.12 else abs(rng.normal(0.0, 0.13))
    else:
        length = rng.uniform(0.1, 0.42) if rng.random() < 0.22 else rng.uniform(0.42, 1.0)
    P["hair_len"] = length
    P["volume"] = rng.uniform(0.10, 0.24) + (0.04 if not male else 0)
    P["bangs"] = rng.random() < (0.55 if not male else 0.35)
    P["bangs_depth"] = rng.uniform(0.30, 0.55)
    P["parting"] = rng.uniform(-0.5, 0.5)
    recede = max(0.0, (age - 35) / 40) * (rng.uniform(0, 0.35) if male else rng.uniform(0, 0.08))
    P["hairline"] = -0.62 - recede
    P["bald"] = male and age > 45 and rng.random() < 0.08 + (age - 45) / 80
    # ---- gendered overlapping cues
    P["brow_w"] = max(0.35, rng.normal(1.0 if male else 0.72, 0.2))
    P["brow_arch"] = rng.normal(0.03 if male else 0.07, 0.025)
    P["lips"] = _mix((175, 105, 100), (205, 70, 85), _clip(rng.normal(0.25 if male else 0.55, 0.2), 0, 1)
                     if (not male and rng.random() < 0.45) else _clip(rng.normal(0.1 if male else 0.3, 0.12), 0, 1))
    P["lip_h"] = rng.normal(0.06 if male else 0.075, 0.012)
    P["shoulder"] = rng.normal(2.15 if male else 1.85, 0.2)
    P["neck_w"] = rng.normal(0.52 if male else 0.43, 0.06)
    P["stubble"] = (rng.uniform(0.08, 0.25) if rng.random() < 0.2 else 0.0) if male else 0.0
    P["earring"] = rng.random() < (0.25 if not male else 0.02)
    P["glasses"] = rng.random() < 0.14 + 0.1 * t
    P["glasses_col"] = _rand_colour(rng, 10, 120)
    # ---- eyes, nose, clothes
    P["eye_y"] = rng.normal(-0.08, 0.025)
    P["eye_dx"] = rng.normal(0.40, 0.025)
    P["eye_w"] = rng.normal(0.17, 0.015)
    P["eye_h"] = rng.normal(0.055, 0.008) * (1 - 0.2 * t)
    P["nose_y"] = rng.normal(0.27, 0.02)
    P["mouth_y"] = rng.normal(0.53, 0.025)
    P["mouth_w"] = rng.normal(0.27, 0.03)
    P["clothes"] = _room_colour(rng, 20, 220, vivid=0.45)
    P["collar"] = int(rng.integers(3))
    # ---- background
    P["bg_kind"] = int(rng.integers(4))
    P["bg_seed"] = int(rng.integers(2**31))
    # ---- masks: 5 worn (styles per image), incorrect placement
    # a favourite mask worn in most photos, others now and then; bandanas are rare (~8%)
    main = _mask_look(rng, _pick_style(rng))
    P["masks"] = [main if rng.random() < 0.6 else _mask_look(rng, _pick_style(rng)) for _ in range(5)]
    P["incorrect"] = P["masks"][int(rng.integers(5))]
    P["incorrect_drop"] = rng.uniform(0.30, 0.42) if rng.random() < 0.65 else rng.uniform(0.58, 0.72)
    return P


_MASK_STYLES = {"surgical": 0.42, "kf94": 0.30, "cloth": 0.20, "bandana": 0.08}


def _pick_style(rng) -> str:
    names = list(_MASK_STYLES)
    return names[int(rng.choice(len(names), p=np.array(list(_MASK_STYLES.values()))))]


def _mask_look(rng, style):
    if style == "surgical":
        col = [(150, 195, 225), (160, 205, 230), (236, 238, 240), (245, 245, 245), (35, 35, 38),
               (150, 195, 225), (236, 238, 240), (225, 180, 190)][rng.integers(8)]
        pattern = "pleats"
    elif style == "kf94":
        col = [(240, 240, 242), (30, 30, 33), (200, 200, 205), (150, 195, 225)][rng.integers(4)]
        pattern = "seam"
    elif style == "bandana":
        col = _BANDANA_COLOURS[rng.integers(len(_BANDANA_COLOURS))]
        pattern = "paisley"
    else:
        col = _MASK_COLOURS[rng.integers(len(_MASK_COLOURS))] if rng.random() < 0.7 else _rand_colour(rng)
        pattern = ["plain", "plain", "stripes", "dots", "check"][rng.integers(5)]
    col2 = _rand_colour(rng, 120, 250) if pattern in ("stripes", "dots", "check", "paisley") else None
    if pattern == "paisley":
        col2 = (235, 235, 230)
    return {"style": style, "col": tuple(int(c) for c in col), "col2": col2, "pattern": pattern,
            "size": rng.uniform(0.95, 1.07), "seed": int(rng.integers(2**31))}


def _background(P) -> "Image.Image":
    H, W = P["H"], P["W"]
    rng = np.random.default_rng(P["bg_seed"])
    kind = P["bg_kind"]
    h, w = 32, 24
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    c1 = np.array(_room_colour(rng), float)
    c2 = np.array(_room_colour(rng), float)
    if kind == 0:  # linear gradient in a random direction
        th = rng.uniform(0, 2 * np.pi)
        t = (np.cos(th) * xx + np.sin(th) * yy)
        t = (t - t.min()) / (t.max() - t.min() + 1e-6)
        small = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind == 1:  # blobby noise
        lo = np.array([[_room_colour(rng) for _ in range(3)] for _ in range(4)], np.uint8)
        small = np.asarray(Image.fromarray(lo).resize((w, h), Image.BICUBIC), float)
    else:  # plain wall with vignetting (shapes added below)
        r = np.hypot(xx - 0.5, yy - 0.5)
        small = c1 * (1 - 0.35 * r[..., None])
    img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((W, H), Image.BILINEAR)
    if kind >= 2:
        d = ImageDraw.Draw(img, "RGBA")
        for _ in range(int(rng.integers(2, 7))):
            x0, y0 = rng.uniform(-0.2, 1.0) * W, rng.uniform(-0.2, 1.0) * H
            x1, y1 = x0 + rng.uniform(0.1, 0.7) * W, y0 + rng.uniform(0.1, 0.8) * H
            col = _room_colour(rng, 30, 245, vivid=0.3) + (int(rng.integers(90, 255)),)
            if rng.random() < 0.7 or kind == 3:
                d.rectangle([x0, y0, x1, y1], fill=col)
            else:
                d.ellipse([x0, y0, x1, y1], fill=col)
        if kind == 3:  # floor line / door frame
            y = rng.uniform(0.55, 0.85) * H
            d.rectangle([0, y, W, H], fill=_room_colour(rng, 40, 200) + (200,))
    return img


class _Face:
    """Face-frame coordinates (u, v) in units of the half-width/half-height, tilted with the head."""

    def __init__(self, P):
        self.cx, self.cy, self.a, self.b = P["cx"], P["cy"], P["a"], P["b"]
        th = math.radians(P["tilt"])
        self.c, self.sn = math.cos(th), math.sin(th)

    def __call__(self, u, v):
        x, y = u * self.a, v * self.b
        return (self.cx + x * self.c - y * self.sn, self.cy + x * self.sn + y * self.c)

    def pts(self, uv):
        return [self(u, v) for u, v in uv]

    def box(self, u0, v0, u1, v1):
        """Axis-aligned box around a (small) face-frame rectangle (for ellipses)."""
        (x0, y0), (x1, y1) = self(u0, v0), self(u1, v1)
        return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]

    def ell(self, u, v, ru, rv):
        x, y = self(u, v)
        return [x - ru * self.a, y - rv * self.b, x + ru * self.a, y + rv * self.b]


def _face_outline(P, n=72):
    """Face contour in face-frame units: round forehead, jaw squareness and chin pointiness."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    u, v = c.copy(), s.copy()
    low = s > 0
    p = 1.0 - 0.45 * P["jaw"]  # < 1: squarer jaw
    u[low] = np.sign(c[low]) * np.abs(c[low]) ** p
    u[low] *= 1 - (0.10 + 0.25 * P["chin"]) * s[low] ** 4  # narrower towards the chin
    v[low] = s[low] * (1.0 + 0.04 * P["chin"])
    return list(zip(u, v))


def _draw_person(img, P, rng) -> None:
    """Shoulders, hair, face and features onto ``img``: everything but the mask.

    ``rng`` must be seeded the same for every image of a person (strands, wrinkles stay put).
    """

    d = ImageDraw.Draw(img, "RGBA")
    F = _Face(P)
    s = P["s"]
    skin, hair = P["skin"], P["hair"]
    a, b = P["a"], P["b"]
    lw = lambda k: max(1, int(round(k * s)))  # noqa: E731  line width in px

    # long hair behind the head
    L_ = P["hair_len"]
    if L_ > 0.3 and not P["bald"]:
        bottom = 0.35 + 1.55 * L_
        wide = 1.18 + 0.12 * L_
        pts = [(-0.92, -0.5), (-wide, 0.0), (-wide - 0.05, bottom * 0.6), (-wide + 0.05, bottom),
               (-0.55, bottom + 0.05), (0.55, bottom + 0.05), (wide - 0.05, bottom), (wide + 0.05, bottom * 0.6),
               (wide, 0.0), (0.92, -0.5)]
        d.polygon(F.pts(pts), fill=hair)
    # neck and shoulders
    nw = P["neck_w"]
    d.polygon(F.pts([(-nw, 0.55), (nw, 0.55), (nw * 1.05, 1.45), (-nw * 1.05, 1.45)]), fill=_shade(skin, 0.9))
    d.ellipse(F.ell(0, 1.02, nw * 1.05, 0.2), fill=_shade(skin, 0.72) + (150,))
    sh = P["shoulder"]
    top = P["cy"] + b * 1.32
    cx = P["cx"]
    H = P["H"]
    body = [(cx - nw * a * 1.1, top), (cx - sh * a * 0.85, top + 0.18 * b), (cx - sh * a, top + 0.45 * b),
            (cx - sh * a * 1.08, H + 5), (cx + sh * a * 1.08, H + 5), (cx + sh * a, top + 0.45 * b),
            (cx + sh * a * 0.85, top + 0.18 * b), (cx + nw * a * 1.1, top)]
    d.polygon(body, fill=P["clothes"])
    if P["collar"] == 0:  # V neck
        d.polygon([(cx - nw * a * 1.1, top), (cx + nw * a * 1.1, top), (cx, top + 0.45 * b)], fill=_shade(skin, 0.88))
    elif P["collar"] == 1:  # shirt collar
        dc = _shade(P["clothes"], 1.25)
        d.polygon([(cx - nw * a * 1.2, top - 0.03 * b), (cx, top + 0.25 * b), (cx - nw * a * 0.3, top + 0.32 * b),
                   (cx - nw * a * 1.5, top + 0.12 * b)], fill=dc)
        d.polygon([(cx + nw * a * 1.2, top - 0.03 * b), (cx, top + 0.25 * b), (cx + nw * a * 0.3, top + 0.32 * b),
                   (cx + nw * a * 1.5, top + 0.12 * b)], fill=dc)
    d.line([(cx - sh * a * 0.6, top + 0.3 * b), (cx - sh * a * 0.55, H)], fill=_shade(P["clothes"], 0.8) + (120,),
           width=lw(3))
    # ears
    for sg in (-1, 1):
        d.ellipse(F.ell(sg * 0.98, 0.05, 0.13, 0.17), fill=_shade(skin, 0.93))
        if P["earring"]:
            d.ellipse(F.ell(sg * 1.0, 0.24, 0.035, 0.028), fill=(230, 200, 90))
    # hair volume (top of head) and face
    if not P["bald"]:
        vol = P["volume"]
        side = 0.15 + 0.35 * min(L_, 0.3)
        cap = [(-1.03, side), (-1.08, -0.35), (-0.85, -0.9 - vol), (-0.4, -1.08 - vol), (0, -1.1 - vol),
               (0.4, -1.08 - vol), (0.85, -0.9 - vol), (1.08, -0.35), (1.03, side), (0.9, -0.3), (-0.9, -0.3)]
        d.polygon(F.pts(cap), fill=hair)
    face = F.pts(_face_outline(P))
    d.polygon(face, fill=skin)
    # soft shading: darker rim, lighter centre (alpha blended)
    d.ellipse(F.ell(0.0, 0.0, 0.74, 0.82), fill=_shade(skin, 1.05) + (70,))
    d.ellipse(F.ell(-0.05, -0.1, 0.45, 0.5), fill=_shade(skin, 1.08) + (60,))
    d.polygon(face, outline=_shade(skin, 0.8) + (110,))
    if not P["bald"]:
        hl = P["hairline"]
        # forehead hairline: cap down to the hairline, receding with age in some men
        fh = [(-0.99, -0.15), (-0.95, hl + 0.15), (-0.6, hl - 0.06), (0, hl - 0.12), (0.6, hl - 0.06),
              (0.95, hl + 0.15), (0.99, -0.15), (1.07, -0.6), (0.85, -0.95 - P["volume"]),
              (0, -1.12 - P["volume"]), (-0.85, -0.95 - P["volume"]), (-1.07, -0.6)]
        d.polygon(F.pts(fh), fill=hair)
        if P["bangs"]:
            bd = P["bangs_depth"]
            pa = P["parting"]
            bangs = [(-1.0, -0.2), (-0.85, -bd + 0.05), (pa - 0.2, -0.3 - 0.15 * bd), (pa, -0.82),
                     (pa + 0.25, -bd), (0.85, -bd - 0.02), (1.0, -0.25), (1.02, -0.8), (-1.02, -0.8)]
            d.polygon(F.pts(bangs), fill=hair)
        # hair strands and grey streaks
        nstr = int(18 + 40 * P["grey"])
        for _ in range(nstr):
            u0 = rng.uniform(-0.95, 0.95)
            grey = rng.random() < P["grey"]
            col = (_mix(P["hair_base"], (215, 214, 210), rng.uniform(0.6, 1.0)) if grey
                   else _shade(P["hair_base"], rng.uniform(0.6, 1.5)))
            v0 = -1.0 - P["volume"] * rng.uniform(0.2, 0.9) + 0.35 * abs(u0)
            d.line([F(u0, v0), F(u0 * 1.08, v0 + rng.uniform(0.2, 0.45))], fill=col + (170,), width=lw(2))
    else:
        d.ellipse(F.ell(0, -0.75, 0.6, 0.22), fill=_shade(skin, 1.08) + (90,))
        for sg in (-1, 1):
            d.polygon(F.pts([(sg * 1.02, 0.0), (sg * 1.06, -0.55), (sg * 0.8, -0.55), (sg * 0.85, 0.0)]), fill=hair)

    # eyebrows (thickness: a gender cue; greying with age)
    brow_col = _mix(P["hair_base"], (160, 158, 155), P["grey"] * 0.6)
    ey, edx, ew, eh = P["eye_y"], P["eye_dx"], P["eye_w"], P["eye_h"]
    th = 0.028 * P["brow_w"]  # half thickness in face units
    arch = P["brow_arch"]
    for sg in (-1, 1):
        us = np.linspace(edx - ew * 1.15, edx + ew * 1.2, 7)
        x = (us - edx) / (ew * 1.2)
        mid = ey - 0.14 - arch * (1 - x ** 2) + 0.015 * x
        half = th * (1.15 - 0.55 * (x + 1) / 2)  # thick inner end, thin outer end
        upper = [(sg * u, m - h) for u, m, h in zip(us, mid, half)]
        lower = [(sg * u, m + h) for u, m, h in zip(us, mid, half)][::-1]
        d.polygon(F.pts(upper + lower), fill=brow_col + (235,))
    # eyes
    for sg in (-1, 1):
        d.ellipse(F.ell(sg * edx, ey, ew, eh), fill=(240, 238, 232))
        d.ellipse(F.ell(sg * edx, ey, ew * 0.42, min(eh * 1.05, ew * 0.42 * a / b)), fill=(40, 28, 24))
        d.line([F(sg * (edx - ew), ey - eh * 0.2), F(sg * edx, ey - eh * 1.15), F(sg * (edx + ew), ey - eh * 0.2)],
               fill=(35, 25, 25), width=lw(2.2), joint="curve")
        if P["bags"] > 0.25:  # eye bags
            d.arc(F.ell(sg * edx, ey + eh * 1.3, ew * 0.9, eh * 1.2), 20, 160,
                  fill=_shade(skin, 0.78) + (int(_clip(160 * P["bags"], 0, 200)),), width=lw(2))
    # nose and mouth
    ny = P["nose_y"]
    d.line([F(0.02, ey + 0.05), F(0.06, ny - 0.02)], fill=_shade(skin, 0.82) + (120,), width=lw(2))
    d.arc(F.ell(0, ny - 0.03, 0.14, 0.05), 20, 160, fill=_shade(skin, 0.7) + (200,), width=lw(2.5))
    for sg in (-1, 1):
        d.ellipse(F.ell(sg * 0.07, ny - 0.01, 0.035, 0.018), fill=_shade(skin, 0.55) + (200,))
    my, mw, mh = P["mouth_y"], P["mouth_w"], P["lip_h"]
    d.ellipse(F.ell(0, my, mw, mh), fill=P["lips"])
    d.line([F(-mw, my), F(0, my + 0.01), F(mw, my)], fill=_shade(P["lips"], 0.55), width=lw(1.5))
    if P["stubble"]:
        st = (40, 35, 35, int(255 * P["stubble"]))
        d.polygon(F.pts([(-0.8, 0.45), (-0.45, 0.38), (0, 0.40), (0.45, 0.38), (0.8, 0.45), (0.7, 0.85),
                         (0.3, 1.0), (0, 1.03), (-0.3, 1.0), (-0.7, 0.85)]), fill=st)
        d.ellipse(F.ell(0, my, mw * 1.0, mh * 1.05), fill=P["lips"])

    # wrinkles: forehead lines, crow's feet, nasolabial folds, age spots (count/contrast ~ age)
    w = P["wrinkle"]
    if w > 0.05:
        alpha = int(_clip(40 + 150 * w, 0, 210))
        wc = _shade(skin, 0.62) + (alpha,)
        n_fore = int(_clip(round(w * 4.5 + rng.normal(0, 0.6)), 0, 5))
        hl = P["hairline"] if not P["bald"] else -0.9
        for k in range(n_fore):
            v = -0.32 - k * 0.075
            if v < hl + 0.08:
                break
            du = rng.uniform(0.28, 0.48)
            d.line([F(-du, v + 0.02), F(0, v - 0.015), F(du, v + 0.02)], fill=wc, width=lw(1.6), joint="curve")
        n_crow = int(_clip(round(w * 3.2 + rng.normal(0, 0.5)), 0, 4))
        for sg in (-1, 1):
            for k in range(n_crow):
                d.line([F(sg * (edx + ew * 1.1), ey + (k - 1) * 0.03),
                        F(sg * (edx + ew * 1.1 + 0.1), ey + (k - 1) * 0.07)], fill=wc, width=lw(1.3))
        if w > 0.25:
            for sg in (-1, 1):
                d.line([F(sg * 0.17, ny - 0.02), F(sg * 0.28, my - 0.02), F(sg * 0.3, my + 0.1)],
                       fill=_shade(skin, 0.68) + (int(alpha * 0.9),), width=lw(2.2), joint="curve")
    for _ in range(P["spots"]):
        u, v = rng.uniform(-0.7, 0.7), rng.uniform(-0.55, 0.2)
        d.ellipse(F.ell(u, v, 0.02, 0.015), fill=_shade(skin, 0.7) + (150,))
    # glasses
    if P["glasses"]:
        gc = P["glasses_col"] + (255,)
        for sg in (-1, 1):
            box = F.box(sg * (edx - ew * 1.5), ey - 0.09, sg * (edx + ew * 1.5), ey + 0.1)
            r = int(min(8 * s + 1, (box[2] - box[0]) / 2 - 1, (box[3] - box[1]) / 2 - 1))
            if r >= 1:
                d.rounded_rectangle(box, radius=r, outline=gc, width=lw(2.5))
            else:
                d.rectangle(box, outline=gc, width=1)
        d.line([F(-(edx - ew * 1.5), ey - 0.03), F(edx - ew * 1.5, ey - 0.03)], fill=gc, width=lw(2.5))


def _mask_polygon(style):
    if style == "kf94":
        return [(-0.97, 0.14), (-0.5, 0.0), (0, -0.06), (0.5, 0.0), (0.97, 0.14), (0.9, 0.6), (0.62, 0.95),
                (0.3, 1.07), (0, 1.16), (-0.3, 1.07), (-0.62, 0.95), (-0.9, 0.6)]
    if style == "bandana":
        return [(-1.22, 0.05), (-0.6, -0.02), (0, -0.05), (0.6, -0.02), (1.22, 0.05), (1.1, 0.55), (0.7, 1.1),
                (0.3, 1.5), (0, 1.7), (-0.3, 1.5), (-0.7, 1.1), (-1.1, 0.55)]
    return [(-0.98, 0.13), (-0.5, 0.03), (0, -0.02), (0.5, 0.03), (0.98, 0.13), (0.95, 0.45), (0.88, 0.72),
            (0.6, 0.98), (0, 1.1), (-0.6, 0.98), (-0.88, 0.72), (-0.95, 0.45)]


def _draw_mask(img, P, look, drop: float = 0.0) -> None:
    """Draw a mask over nose and mouth (``drop`` = 0) or lowered by ``drop`` face half-heights."""

    F = _Face(P)
    s = P["s"]
    k = look["size"]
    style = look["style"]
    poly = [(u * k, v * k + drop + (1 - k) * 0.5) for u, v in _mask_polygon(style)]
    if drop:  # a lowered mask hangs loose below the chin: a little narrower at the top
        poly = [(u * (0.93 if v < 0.5 + drop else 1.0), v) for u, v in poly]
    pts = F.pts(poly)
    col = look["col"]
    d = ImageDraw.Draw(img, "RGBA")
    # ear loops first (under the mask edge)
    lw = max(1, int(round(2 * s)))
    if style != "bandana":
        loop = _shade(col, 0.9) if col[0] + col[1] + col[2] > 200 else (235, 235, 235)
        for sg in (-1, 1):
            d.line([F(sg * 0.95 * k, 0.18 + drop), F(sg * 1.0, -0.02), F(sg * 0.9 * k, 0.7 + drop * 0.8)],
                   fill=loop + (230,), width=lw, joint="curve")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    x0, y0 = int(math.floor(min(xs))), int(math.floor(min(ys)))
    x1, y1 = int(math.ceil(max(xs))) + 1, int(math.ceil(max(ys))) + 1
    pattern = look["pattern"]
    if pattern in ("plain", "pleats", "seam"):
        d.polygon(pts, fill=col)
        # shading: lower half a bit darker
        lo = F.pts([(u, v) for u, v in poly if v > 0.55 + drop])
        if len(lo) >= 3:
            d.polygon(lo, fill=_shade(col, 0.88) + (90,))
        dark = _shade(col, 0.78) + (200,)
        if pattern == "pleats":
            for v in (0.32, 0.52, 0.72):
                d.line([F(-0.9 * k, v * k + drop), F(0.9 * k, v * k + drop)], fill=dark, width=lw)
            d.line([F(-0.35, 0.03 + drop), F(0.35, 0.03 + drop)], fill=(200, 200, 205, 220), width=lw)
        elif pattern == "seam":
            d.line([F(0, -0.05 * k + drop), F(0, 1.15 * k + drop)], fill=dark, width=lw)
        d.polygon(pts, outline=_shade(col, 0.7) + (160,))
        return
    # patterned fabric: draw the pattern on a tile and paste it through the polygon
    w, h = max(1, x1 - x0), max(1, y1 - y0)
    tile = Image.new("RGB", (w, h), col)
    td = ImageDraw.Draw(tile)
    rng = np.random.default_rng(look["seed"])
    c2 = look["col2"]
    step = max(3, int(14 * s))
    if pattern == "stripes":
        for yy in range(0, h + w, step * 2):
            td.line([(0, yy), (w, yy - w * 0.3)], fill=c2, width=max(1, step // 2))
    elif pattern == "check":
        for xx in range(0, w, step * 2):
            td.rectangle([xx, 0, xx + step - 1, h], fill=_mix(col, c2, 0.5))
        for yy in range(0, h, step * 2):
            td.rectangle([0, yy, w, yy + step - 1], fill=_mix(col, c2, 0.5))
    else:  # dots / paisley-like drops
        n = int(w * h / (step * step) * (0.8 if pattern == "dots" else 1.2))
        r = max(1.0, step * (0.22 if pattern == "dots" else 0.3))
        xy = rng.uniform(0, 1, (n, 2)) * (w, h)
        for x, y in xy:
            if pattern == "dots":
                td.ellipse([x - r, y - r, x + r, y + r], fill=c2)
            else:
                td.ellipse([x - r, y - r * 0.7, x + r, y + r * 0.7], outline=c2, width=max(1, int(r / 2)))
                td.point((x, y), fill=c2)
    alpha = Image.new("L", (w, h), 0)
    ImageDraw.Draw(alpha).polygon([(x - x0, y - y0) for x, y in pts], fill=255)
    img.paste(tile, (x0, y0), alpha)
    d.polygon(pts, outline=_shade(col, 0.6) + (170,))


def _pose(P, rng) -> dict:
    """A copy of the person with this image's small pose change: shift, head tilt, distance."""
    Q = dict(P)
    z = rng.uniform(0.96, 1.04)
    Q["a"], Q["b"] = P["a"] * z, P["b"] * z
    Q["cx"] = P["cx"] + rng.normal(0, 0.014 * P["W"])
    Q["cy"] = P["cy"] + rng.normal(0, 0.010 * P["H"])
    Q["tilt"] = P["tilt"] + rng.normal(0, 2.0)
    return Q


def _lighting(img, P, rng):
    """Per-image brightness, contrast and white balance, as one lookup table."""
    bright = rng.uniform(0.84, 1.14) * P["light"]
    contrast = rng.uniform(0.86, 1.12)
    gains = np.asarray(P["wb"]) * rng.normal(1, 0.015, 3)
    x = np.arange(256, dtype=float)
    lut = np.concatenate([np.clip(((x - 128) * contrast + 128) * bright * g, 0, 255) for g in gains])
    return img.point(np.round(lut).astype(int).tolist())


def _scaled(P, f: float, H: int, W: int) -> dict:
    """The person drawn on a canvas ``f`` times the size (``H`` x ``W``)."""
    Q = dict(P)
    for k in ("a", "b", "cx", "cy", "s"):
        Q[k] = P[k] * f
    Q["H"], Q["W"] = H, W
    return Q


def render_person(seed: int, split: int, index: int, gender: int, age: int, image_size=(512, 384)) -> dict:
    """The 7 PIL images of one person, keyed by the stem whose mask state they show.

    Drawn on a canvas 0.55..0.8 times the size and scaled up (camera softness, and cheaper
    than drawing big and blurring); about one image in eight is blurrier still.

    Args:
        seed: the set's seed.
        split: 0 train, 1 eval (with ``seed`` and ``index``, seeds the person's generator).
        index: the person's index in the plan.
        gender: the drawn gender, 0 male, 1 female.
        age: the drawn age in years.
        image_size: ``(height, width)`` of the images.

    Returns:
        ``{stem: PIL.Image}`` (RGB, ``width x height``) for the 7 stems of :data:`STEMS`, in that
        order; the same arguments give the same pixels.

    Example:
        >>> imgs = render_person(0, 0, 0, gender=1, age=45, image_size=(64, 48))
        >>> list(imgs)
        ['mask1', 'mask2', 'mask3', 'mask4', 'mask5', 'incorrect_mask', 'normal']
        >>> imgs["normal"].size, imgs["normal"].mode
        ((48, 64), 'RGB')
    """
    H, W = image_size
    rng = _person_rng(seed, split, index)
    P = person_params(rng, gender, age, H, W)
    P["light"] = rng.uniform(0.88, 1.1)
    P["wb"] = tuple(rng.normal(1, 0.03, 3))
    P["draw_seed"] = int(rng.integers(2**31))
    f = rng.uniform(0.55, 0.8)
    h, w = max(16, int(round(H * f))), max(12, int(round(W * f)))
    f = w / W
    bg = _background(_scaled(P, f, h, w))
    if rng.random() < 0.6:  # sensor grain, fixed per person (the camera and the room)
        arr = np.asarray(bg, dtype=np.int16) + rng.integers(-4, 5, (h, w, 1), dtype=np.int16)
        bg = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    out = {}
    for j, stem in enumerate(STEMS):
        Q = _scaled(_pose(P, rng), f, h, w)
        img = bg.copy()
        _draw_person(img, Q, np.random.default_rng(P["draw_seed"]))
        if stem.startswith("mask"):
            _draw_mask(img, Q, P["masks"][j])
        elif stem == "incorrect_mask":
            _draw_mask(img, Q, P["incorrect"], drop=P["incorrect_drop"])
        img = _lighting(img, P, rng)
        if rng.random() < 0.12:  # out of focus / motion: a smaller canvas still
            g = rng.uniform(0.45, 0.8)
            img = img.resize((max(8, int(w * g)), max(8, int(h * g))), Image.BILINEAR)
        out[stem] = img.resize((W, H), Image.BILINEAR)
    return out


def _encode(img, ext: str) -> bytes:
    buf = io.BytesIO()
    if ext == ".png":
        img.save(buf, format="PNG", compress_level=3)
    else:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _apple_double(name: str) -> bytes:
    """A macOS AppleDouble "._name" resource fork: the 4096-byte junk the real set carries."""
    head = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02"
    head += b"\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x0e\xb0\x00\x00\x00\x02\x00\x00\x0e\xe2\x00\x00\x01\x1e"
    tail = hashlib.sha1(name.encode()).digest()
    return (head + tail).ljust(4096, b"\x00")


def render_task(task) -> int:
    """Worker: draw one person and write its 7 files. Returns the number of images written.

    Args:
        task: ``(seed, split, index, gender, age, image_size, files, swap, hidden)``: the
            :func:`render_person` arguments, ``{stem: path}`` (the extension picks PNG or JPEG),
            whether the incorrect_mask and normal images are swapped (a planted mislabel), and
            whether each image gets a macOS ``._`` file beside it.

    Returns:
        The number of images written (``len(files)``).
    """
    seed, split, index, gender, age, size, files, swap, hidden = task
    imgs = render_person(seed, split, index, gender, age, size)
    if swap:
        imgs["incorrect_mask"], imgs["normal"] = imgs["normal"], imgs["incorrect_mask"]
    for stem, path in files.items():
        ext = os.path.splitext(path)[1]
        with open(path, "wb") as f:
            f.write(_encode(imgs[stem], ext))
        if hidden:
            folder, name = os.path.split(path)
            with open(os.path.join(folder, "._" + name), "wb") as f:
                f.write(_apple_double(name))
    return len(files)


