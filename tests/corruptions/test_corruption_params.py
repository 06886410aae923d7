"""The parameter tables equal SPEC section 6, and the API's small contracts."""
from __future__ import annotations

import pytest

from agedistill_core.corruptions import (
    CORRUPTIONS, PARAMS, SEVERITIES, corrupt, corruption_names, image_seed,
)
from agedistill_core.corruptions.blur import motion_blur_params, zoom_factors
from agedistill_core.corruptions.params import MOTION_BLUR_TABLE, SPATTER_EXTRA
from agedistill_core.errors import ConfigError

# SPEC section 6, copied literally (severities 1..5)
SPEC_TABLE = {
    "gaussian_blur": (1, 1.8, 2.6, 3.4, 4),
    "defocus_blur": ((1.5, .1), (2, .2), (2, .3), (2.5, .4), (3, .4)),
    "zoom_blur": ((1.11, .01), (1.18, .01), (1.26, .02), (1.32, .02), (1.4, .03)),
    "motion_blur": ((3.3, 1), (5, 1.7), (5, 2.7), (5, 4), (6.7, 5)),
    "gaussian_noise": (.08, .12, .18, .24, .30),
    "shot_noise": (60, 29, 15, 8, 5),
    "contrast_increase": (1.5, 1.9, 2.6, 3.3, 5),
    "contrast_decrease": (.4, .33, .24, .16, .1),
    "brightness_increase": (.1, .2, .3, .4, .5),
    "brightness_decrease": (-.1, -.2, -.3, -.4, -.5),
    "spatter": ((.65, .3, 4, .69, 0), (.65, .3, 3, .68, 0), (.65, .3, 2, .68, 0),
                (.65, .3, 1, .65, 1), (.67, .4, 1, .65, 1)),
    "jpeg": (25, 18, 15, 10, 7),
    "pixelation": (.6, .5, .41, .3, .25),
}
# SPEC facts under the table
SPEC_MOTION_R0_S0 = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
SPEC_SPATTER_EXTRA = (0.6, 0.6, 0.5, 1.5, 1.5)


def test_names_in_spec_order():
    assert corruption_names() == list(SPEC_TABLE)
    assert sorted(CORRUPTIONS.names()) == sorted(SPEC_TABLE)
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", [n for n in SPEC_TABLE if n != "motion_blur"])
def test_params_equal_spec(name):
    assert PARAMS[name] == SPEC_TABLE[name]


def test_motion_blur_params_are_the_authors_r0_s0():
    assert PARAMS["motion_blur"] == SPEC_MOTION_R0_S0
    # the table prints (r0, s0) / 3
    assert MOTION_BLUR_TABLE == SPEC_TABLE["motion_blur"]
    for (r0, s0), (r, s) in zip(SPEC_MOTION_R0_S0, SPEC_TABLE["motion_blur"]):
        assert round(r0 / 3, 1) == r and round(s0 / 3, 1) == s
    # floor(v * H / 48 / 3): 10 * 200 / 48 / 3 = 13.9, 3 * 200 / 48 / 3 = 4.17
    assert motion_blur_params(200, 10, 3) == (13, 4)
    assert motion_blur_params(48, 20, 15) == (6, 5)
    assert motion_blur_params(15, 10, 3) == (1, 0)
    assert motion_blur_params(144, 10, 3) == (10, 3)  # exact multiples of 3 stay exact
    # the authors' float form, (r0 * H / 48) // 3, for every height up to 2000
    for h in range(1, 2001):
        for r0, s0 in SPEC_MOTION_R0_S0:
            scale = h / 48
            assert motion_blur_params(h, r0, s0) == (int(r0 * scale // 3), int(s0 * scale // 3))


def test_defocus_params_scale_with_height():
    from agedistill_core.corruptions.blur import defocus_blur_params
    assert defocus_blur_params(48, 2.5, 0.4) == (2.5, 0.4)
    r, s = defocus_blur_params(200, 2, 0.2)
    assert r == pytest.approx(8.3333333) and s == pytest.approx(0.8333333)
    r, s = defocus_blur_params(448, 3, 0.4)
    assert r == pytest.approx(28) and s == pytest.approx(3.7333333)


def test_spatter_extra_and_registry_table():
    assert SPATTER_EXTRA == SPEC_SPATTER_EXTRA
    table = CORRUPTIONS.get("spatter").params
    assert tuple(c for c, _ in table) == SPEC_TABLE["spatter"]
    assert tuple(e for _, e in table) == SPEC_SPATTER_EXTRA


def test_registry_tables_match_params():
    for name in SPEC_TABLE:
        if name != "spatter":
            assert CORRUPTIONS.get(name).params == PARAMS[name]


def test_zoom_factors_are_numpy_arange():
    import numpy as np
    for zmax, step in SPEC_TABLE["zoom_blur"]:
        assert zoom_factors(zmax, step) == tuple(np.arange(1, zmax, step))
        assert zoom_factors(zmax, step)[0] == 1.0


def test_unknown_name_and_bad_severity_raise_config_error(synthetic):
    with pytest.raises(ConfigError, match="gaussian_noise") as e:
        corrupt(synthetic, "fog", 1, seed=0)
    assert "pixelation" in str(e.value)
    for bad in (0, 6, -1, 2.0, "3", True, None):
        with pytest.raises(ConfigError, match="1, 2, 3, 4, 5"):
            corrupt(synthetic, "jpeg", bad, seed=0)
    with pytest.raises(ConfigError):
        corrupt(synthetic, "jpeg", 1, seed=-1)
    with pytest.raises(ConfigError):
        corrupt(synthetic[..., 0], "jpeg", 1, seed=0)
    with pytest.raises(ConfigError):
        corrupt(synthetic.astype("float32"), "jpeg", 1, seed=0)


def test_image_seed_is_stable():
    # fixed values: SHA-256 based, identical in every process and Python run
    assert image_seed("utk/1_0_0_x.jpg", "gaussian_noise", 3, 0) == 1871862363899192003
    assert image_seed("a", "jpeg", 1, 7) == 9439436470424146775
    seeds = {image_seed("a", n, s, 0) for n in SPEC_TABLE for s in SEVERITIES}
    assert len(seeds) == len(SPEC_TABLE) * 5
    assert image_seed("a", "jpeg", 1, 0) != image_seed("b", "jpeg", 1, 0)
    assert image_seed("a", "jpeg", 1, 0) != image_seed("a", "jpeg", 1, 1)
