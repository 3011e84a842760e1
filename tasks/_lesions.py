"""Vectorised procedural drawing of dermoscopy-like skin-lesion images.

Private helper of :mod:`tasks.synthetic`. A batch of images of one shape is drawn at once
with numpy: every texture is a smooth random field (low-resolution Gaussian noise lifted
to full resolution by a bilinear interpolation matrix), thresholded or level-set into
dots, patches, vessels, hair and wrinkles. Each class has a signature over the
:data:`FEATURES` (size, border, colours, dermoscopic structures); a lesion blends its
class's signature with that of a look-alike class, which is what makes MEL / NV / BKL and
AK / SCC / BCC confusable. Skin, hair and acquisition (colour cast, blur, vignetting,
dermoscope circle, zoom) come from the per-image parameters, so groups differ in
difficulty through the same mechanisms as on the real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Order of the columns of CLASS_STYLE; a lesion's style is one row-blend of it.
FEATURES = (
    "radius", "elong", "asym", "irreg", "soft", "network", "dark_dots", "white_dots",
    "vessels", "lacunae", "keratin", "bluegray", "variegation", "darkness", "redness",
    "scar", "fissures",
)
F = {name: i for i, name in enumerate(FEATURES)}

# Rows follow ISIC_CLASSES (MEL, NV, BCC, AK, BKL, DF, VASC, SCC). Radius is in units of
# half the shorter image side; other features are strengths in [0, 1]. The values follow
# textbook dermoscopy: MEL large, asymmetric, variegated with blue-grey veil; NV small,
# symmetric, regular network; BCC pink with arborising vessels and blue-grey nests; AK red,
# ill-defined, scaly; BKL tan, sharp, fissured with milia; DF small with a central white
# scar; VASC red-purple lacunae; SCC pink with a keratin centre.
CLASS_STYLE = np.array(
    [
        # rad  elo  asym irr  soft net  ddot wdot vess lac  ker  blue var  dark red  scar fiss
        [0.60, 1.35, .14, .10, .07, .50, .50, .05, .10, .00, .00, .50, .70, .70, .15, .00, .05],
        [0.45, 1.15, .04, .03, .06, .60, .30, .00, .00, .00, .00, .05, .15, .50, .05, .00, .05],
        [0.48, 1.25, .08, .06, .08, .00, .10, .20, .80, .00, .10, .50, .30, .20, .60, .05, .00],
        [0.50, 1.30, .08, .08, .16, .10, .00, .30, .30, .00, .40, .00, .20, .10, .70, .00, .00],
        [0.50, 1.30, .08, .05, .04, .20, .30, .60, .10, .00, .20, .10, .35, .45, .15, .00, .60],
        [0.30, 1.10, .03, .02, .12, .40, .00, .00, .00, .00, .00, .00, .10, .30, .20, .80, .00],
        [0.35, 1.15, .04, .03, .04, .00, .00, .00, .10, .90, .00, .20, .30, .30, .95, .00, .00],
        [0.50, 1.20, .08, .07, .12, .00, .00, .30, .50, .10, .80, .00, .30, .10, .70, .10, .10],
    ],
    dtype=np.float32,
)
# Per-lesion jitter of each feature around its (blended) class value.
STYLE_JITTER = np.array(
    [0.06, 0.06, .02, .015, .015, .075, .075, .06, .075, .06, .06, .075, .075, .075, .06, .05, .06],
    dtype=np.float32,
)
# Which class a lesion may resemble (rows sum to 1, diagonal 0): the confusions seen in
# dermoscopy (MEL<->NV<->BKL, AK<->SCC<->BCC, DF<->NV, VASC<->BCC).
LOOKALIKE = np.array(
    [
        [0, .50, .10, 0, .30, .05, 0, .05],
        [.50, 0, 0, 0, .30, .20, 0, 0],
        [.20, 0, 0, .20, .20, 0, .10, .30],
        [0, 0, .30, 0, .20, 0, 0, .50],
        [.40, .30, .10, .20, 0, 0, 0, 0],
        [.20, .60, 0, 0, .20, 0, 0, 0],
        [.30, 0, .40, 0, 0, 0, 0, .30],
        [0, 0, .40, .50, .10, 0, 0, 0],
    ],
    dtype=np.float64,
)

_LIGHT_BROWN = np.array([0.72, 0.52, 0.36], np.float32)
_DARK_BROWN = np.array([0.30, 0.18, 0.12], np.float32)
_BLACKISH = np.array([0.14, 0.10, 0.10], np.float32)
_BLUE_GREY = np.array([0.42, 0.47, 0.58], np.float32)
_PINK = np.array([0.88, 0.56, 0.56], np.float32)
_RED = np.array([0.72, 0.22, 0.24], np.float32)
_MAROON = np.array([0.45, 0.08, 0.30], np.float32)
_WHITE = np.array([0.95, 0.93, 0.86], np.float32)
_LIGHT_SKIN = np.array([0.97, 0.80, 0.72], np.float32)
_DARK_SKIN = np.array([0.58, 0.40, 0.30], np.float32)


def _interp(n_out: int, n_in: int) -> np.ndarray:
    """Bilinear interpolation matrix (n_out, n_in) from a coarse grid to pixels."""
    t = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(t).astype(int), n_in - 2)
    f = (t - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] = 1.0 - f
    m[np.arange(n_out), i0 + 1] = f
    return m


class _Fields:
    """Draws standardised smooth random fields for a batch of one image shape."""

    def __init__(self, rng: np.random.Generator, b: int, h: int, w: int) -> None:
        self.rng, self.b, self.h, self.w = rng, b, h, w
        self._mats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, cells: int) -> np.ndarray:
        """Draw a (B, H, W) field with about `cells` correlation lengths across the short side."""
        s = min(self.h, self.w)
        gy = max(2, round(cells * self.h / s) + 1)
        gx = max(2, round(cells * self.w / s) + 1)
        key = gy * 10_000 + gx
        if key not in self._mats:
            self._mats[key] = (_interp(self.h, gy), _interp(self.w, gx))
        my, mx = self._mats[key]
        coarse = self.rng.standard_normal((self.b, gy, gx), dtype=np.float32)
        field = np.einsum("hi,bij,wj->bhw", my, coarse, mx, optimize=True)
        # Bilinear interpolation shrinks the variance between grid nodes: renormalise so
        # thresholds mean the same at every resolution.
        field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
        return field


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # logistic without exp overflow


def _mix(img: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend `img` (B,H,W,3) toward `colour` ((3,) or (B,H,W,3)) by weight (B,H,W)."""
    wgt = np.clip(weight, 0.0, 1.0)[..., None]
    return img + (colour - img) * wgt


def _col(v: np.ndarray) -> np.ndarray:
    """Per-image scalar (B,) -> broadcastable (B,1,1)."""
    return v.astype(np.float32)[:, None, None]


def _blur(img: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur with a per-image sigma (pixels), quantised to 0.5 px steps."""
    b, h, w, _ = img.shape
    levels = np.round(np.asarray(sigma) * 2.0) / 2.0
    out = img.copy()
    for level in np.unique(levels):
        if level <= 0:
            continue
        sel = levels == level

        def band(n: int, s: float = float(level)) -> np.ndarray:
            d = np.arange(n)[:, None] - np.arange(n)[None, :]
            k = np.exp(-0.5 * (d / s) ** 2).astype(np.float32)
            return k / k.sum(axis=1, keepdims=True)  # renormalised rows: no dark edges

        out[sel] = np.einsum("hi,bijc,wj->bhwc", band(h), img[sel], band(w), optimize=True)
    return out


@dataclass(frozen=True)
class _Geometry:
    """Where the lesion lies in a batch: image and lesion coordinates, border and mask."""

    u: np.ndarray  # (1, H, W) x in units of half the shorter side, 0 at the centre
    v: np.ndarray  # (1, H, W) y, likewise
    frame_r: np.ndarray  # (1, H, W) distance from the image centre
    d: np.ndarray  # (B, H, W) distance from the lesion centre, 1 on the border
    mask: np.ndarray  # (B, H, W) soft lesion mask
    la: np.ndarray  # (B, H, W) lesion-relative coordinates for structures
    lb: np.ndarray


def _geometry(p: dict[str, np.ndarray], field: _Fields, h: int, w: int) -> _Geometry:
    """Lay out each lesion in its own rotated, elongated frame with a harmonic border."""
    st = p["style"]
    s = min(h, w) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = ((xx - (w - 1) / 2.0) / s)[None]
    v = ((yy - (h - 1) / 2.0) / s)[None]
    frame_r = np.sqrt(u**2 + v**2)
    radius = _col(np.clip(st[:, F["radius"]], 0.12, 0.95) * p["zoom"])
    dx, dy = u - _col(p["cx"]), v - _col(p["cy"])
    ct, sn = _col(np.cos(p["theta"])), _col(np.sin(p["theta"]))
    a = dx * ct + dy * sn
    bb = (-dx * sn + dy * ct) * _col(np.clip(st[:, F["elong"]], 1.0, 2.0))
    rho = np.sqrt(a**2 + bb**2)
    phi = np.arctan2(bb, a)
    k = np.arange(1, 7, dtype=np.float32)
    amp = p["harm_amp"] * np.where(k <= 2, st[:, [F["asym"]]], st[:, [F["irreg"]]])
    shape = 1.0 + np.einsum(
        "bk,bhwk->bhw", amp, np.cos(phi[..., None] * k + p["harm_phase"][:, None, None, :])
    )
    shape += 0.5 * _col(st[:, F["irreg"]]) * field(6)
    d = rho / (radius * np.maximum(shape, 0.3))  # 1 on the border
    soft = _col(np.clip(st[:, F["soft"]], 0.02, 0.3))
    return _Geometry(u=u, v=v, frame_r=frame_r, d=d, mask=_sig((1.0 - d) / soft),
                     la=a / radius, lb=bb / radius)


def _skin(p: dict[str, np.ndarray], field: _Fields, g: _Geometry) -> np.ndarray:
    """Background skin: tone, texture, age, sun damage, wrinkles and erythema (B,H,W,3)."""
    st = p["style"]
    tone = _col(p["skin_tone"])[..., None]
    skin = _LIGHT_SKIN + (_DARK_SKIN - _LIGHT_SKIN) * tone
    skin = skin * (1.0 + 0.035 * field(10)[..., None] + 0.02 * field(3)[..., None])
    skin = skin + np.array([0.05, -0.01, -0.02], np.float32) * _col(p["age01"])[..., None]
    sun = _col(p["sun"])
    lentigo = _sig((field(9) - (2.4 - 1.2 * sun)) * 4.0) * sun
    skin = _mix(skin, _LIGHT_BROWN * 0.9, 0.7 * lentigo)
    wrinkle = np.exp(-(np.sin(4.0 * field(2) + 9.0 * (g.u + 0.3 * g.v)) ** 2) / 0.02)
    skin = skin * (1.0 - 0.10 * _col(p["age01"]) ** 2 * wrinkle)[..., None]
    # Erythema around inflamed lesions (AK, SCC, BCC): a red halo outside the border.
    halo = _col(np.clip(st[:, F["redness"]] - 0.3, 0, 1)) * np.exp(-((g.d - 1.2) ** 2) / 0.3)
    return _mix(skin, _PINK, 0.5 * halo)


def _lesion_colour(p: dict[str, np.ndarray], field: _Fields) -> np.ndarray:
    """Colour each lesion: brown to pink, variegated, with blue-grey (B,H,W,3)."""
    st = p["style"]
    dark = np.clip(_col(st[:, F["darkness"]]) + 0.15 * field(4), 0, 1)[..., None]
    brown = _LIGHT_BROWN + (_DARK_BROWN - _LIGHT_BROWN) * dark
    red = np.clip(_col(st[:, F["redness"]]) + 0.1 * field(4), 0, 1)[..., None]
    pinkish = _PINK + (_RED - _PINK) * np.clip(0.5 + 0.3 * field(5), 0, 1)[..., None]
    les = brown + (pinkish - brown) * red
    # Variegation: dark / black and reddish patches, more at the periphery for MEL.
    var = _col(st[:, F["variegation"]])
    les = _mix(les, _BLACKISH, var * _sig((field(5) - 1.0) * 4.0))
    les = _mix(les, _RED, 0.6 * var * _sig((field(5) - 1.3) * 4.0))
    return _mix(les, _BLUE_GREY, _col(st[:, F["bluegray"]]) * _sig((field(4) - 0.6) * 3.0))


def _structures(les: np.ndarray, p: dict[str, np.ndarray], field: _Fields,
                rng: np.random.Generator, g: _Geometry) -> np.ndarray:
    """Draw the dermoscopic structures of each class's style onto the lesion colour."""
    st, la, lb = p["style"], g.la, g.lb
    # Pigment network: warped grid lines in lesion coordinates (they scale with it).
    f_net = _col(rng.uniform(9.0, 13.0, len(st)).astype(np.float32))
    warp = 0.6 * field(5)
    grid = np.maximum(np.cos(f_net * la + warp), np.cos(f_net * lb - warp)) ** 8
    net_strength = _col(st[:, F["network"]]) * (0.5 + 0.5 * _sig(field(4) * 2.0))
    les = les * (1.0 - 0.45 * np.clip(net_strength, 0, 1) * grid)[..., None]
    # Dots: dark globules, white milia-like cysts.
    les = _mix(les, _DARK_BROWN * 0.7, _col(st[:, F["dark_dots"]]) * _sig((field(14) - 1.6) * 6))
    les = _mix(les, _WHITE, _col(st[:, F["white_dots"]]) * _sig((field(16) - 1.8) * 6))
    # Arborising vessels: thin curvy level sets of a smooth field.
    vessels = np.exp(-(field(5) ** 2) / 0.012) * _sig(field(3) * 2)
    les = _mix(les, _RED, 0.9 * _col(st[:, F["vessels"]]) * vessels)
    # Lacunae: round red-purple blobs.
    les = _mix(les, _MAROON, _col(st[:, F["lacunae"]]) * _sig((field(7) + 0.3) * 5))
    # Central keratin mass and fibrous scar.
    centre = np.exp(-((la**2 + lb**2) / 0.25))
    les = _mix(les, np.array([0.93, 0.88, 0.70], np.float32),
               _col(st[:, F["keratin"]]) * centre * (0.7 + 0.3 * _sig(field(8))))
    les = _mix(les, _WHITE, _col(st[:, F["scar"]]) * np.exp(-((la**2 + lb**2) / 0.15)))
    # Fissures / ridges (cerebriform pattern of seborrhoeic keratosis).
    fiss = np.exp(-(field(8) ** 2) / 0.03)
    les = les * (1.0 - 0.35 * _col(st[:, F["fissures"]]) * fiss)[..., None]
    return les * (1.0 + 0.05 * field(12))[..., None]


def _hair(img: np.ndarray, p: dict[str, np.ndarray], field: _Fields, rng: np.random.Generator,
          g: _Geometry) -> np.ndarray:
    """Draw hair strands across the image, denser where ``p["hair"]`` is high."""
    ang = p["hair_angle"]
    along = g.u * _col(np.cos(ang)) + g.v * _col(np.sin(ang))
    hair_f = _col(rng.uniform(6.0, 10.0, len(ang)).astype(np.float32))
    strands = np.exp(-(np.sin(hair_f * along + 2.5 * field(2)) ** 2) / 0.004)
    present = _sig((field(3) + 2.0 * _col(p["hair"]) - 1.2) * 3.0)
    return _mix(img, np.array([0.12, 0.09, 0.08], np.float32), 0.9 * strands * present)


def _acquire(img: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator,
             frame_r: np.ndarray) -> np.ndarray:
    """Apply the camera: vignette, dermoscope circle, cast, contrast, blur, noise; to uint8."""
    h, w = img.shape[1:3]
    img = img * (1.0 - _col(p["vignette"]) * frame_r**2)[..., None]
    circle = _col(p["circle"])
    inside = np.where(circle > 0, _sig((circle - frame_r) / 0.03), 1.0)
    img = img * inside[..., None]
    img = img * p["cast"][:, None, None, :] * _col(p["brightness"])[..., None]
    mean = img.mean(axis=(1, 2), keepdims=True)
    img = mean + (img - mean) * _col(p["contrast"])[..., None]
    img = _blur(img, p["blur"] * (min(h, w) / 64.0))
    img = img + _col(p["noise"])[..., None] * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_batch(p: dict[str, np.ndarray], h: int, w: int, seed: np.random.SeedSequence
                 ) -> np.ndarray:
    """Draw a batch of lesion images of one shape.

    The stages draw from one random stream in a fixed order (geometry, skin, lesion
    colour, structures, hair, acquisition), so the same seed gives the same pixels.

    Args:
        p: per-image parameters (arrays of length B) produced by
            ``tasks.synthetic.render_params``: ``style`` (B, len(FEATURES)),
            ``harm_amp``/``harm_phase`` (B, 6), ``skin_tone``, ``age01``, ``hair``,
            ``hair_angle``, ``sun``, ``theta``, ``zoom``, ``cx``, ``cy``, ``cast`` (B, 3),
            ``brightness``, ``contrast``, ``vignette``, ``blur``, ``noise``, ``circle``.
        h: image height in pixels.
        w: image width in pixels.
        seed: seed of this batch's texture noise (independent of the worker that draws it).

    Returns:
        uint8 array (B, H, W, 3).
    """
    rng = np.random.default_rng(seed)
    field = _Fields(rng, len(p["theta"]), h, w)
    g = _geometry(p, field, h, w)
    skin = _skin(p, field, g)
    les = _structures(_lesion_colour(p, field), p, field, rng, g)
    # Pink lesions are translucent: the skin shows through.
    opacity = 0.92 - 0.25 * _col(np.clip(p["style"][:, F["redness"]], 0, 1))
    img = _mix(skin, les, g.mask * opacity)
    img = _hair(img, p, field, rng, g)
    return _acquire(img, p, rng, g.frame_r)
