"""Tests of the room simulation and the RIR bank (spatial_clap_sb.data.spatialiser).

The geometry tests measure the inter-channel delay of anechoic RIRs (reflection order 0:
direct path only) with upsampled GCC-PHAT and compare it with the far-field delay
``spacing * sin(azimuth) / c`` of the azimuth the bank recorded, so a swapped channel,
a mirrored azimuth or a wrong spacing fails.
"""

import os

import numpy as np
import pytest

from spatial_clap_sb.data import spatialiser as spatialiser_module
from spatial_clap_sb.data.spatialiser import (
    SPEED_OF_SOUND,
    RIRBank,
    SpatialiserConfig,
    bank_key,
    cached_rir_bank,
    max_distance_in_room,
    mic_positions,
    render_rir_bank,
    source_position,
)
from spatial_clap_sb.language import ZoneVocabulary

SR = 16000
UPSAMPLE = 32


def delay_right_vs_left(left, right, upsample=UPSAMPLE):
    """Delay of ``right`` relative to ``left`` in samples (GCC-PHAT, upsampled).

    Positive: the right channel lags, i.e. the left channel (channel 0) leads.
    """
    n = len(left)
    spec_l = np.fft.rfft(left, 2 * n)
    spec_r = np.fft.rfft(right, 2 * n)
    cross = spec_r * np.conj(spec_l)
    cross /= np.abs(cross) + 1e-12
    size = 2 * n * upsample
    cc = np.fft.irfft(cross, size)
    cc = np.concatenate([cc[-size // 2:], cc[:size // 2]])
    return (int(np.argmax(cc)) - size // 2) / upsample


def expected_delay(azimuth, spacing, sample_rate=SR):
    """Far-field delay of the right channel behind the left one, in samples."""
    return -spacing * np.sin(np.deg2rad(azimuth)) / SPEED_OF_SOUND * sample_rate


def _anechoic(**changes):
    options = dict(n_rooms=1, positions_per_zone=2, max_order=0, rt60_range=(0.15, 0.15),
                   room_size_min=(6.0, 6.0, 3.0), room_size_max=(7.0, 7.0, 3.0),
                   distance_range=(1.5, 2.5))
    options.update(changes)
    return SpatialiserConfig(**options)


@pytest.fixture(scope="module")
def zones():
    return ZoneVocabulary.default()


@pytest.fixture(scope="module")
def anechoic_bank(zones):
    return render_rir_bank(_anechoic(), zones, seed=0)


@pytest.fixture(scope="module")
def wide_bank(zones):
    return render_rir_bank(_anechoic(mic_spacing=0.3), zones, seed=0)


@pytest.fixture(scope="module")
def reverberant_config():
    return SpatialiserConfig(n_rooms=2, positions_per_zone=2, max_order=3)


@pytest.fixture(scope="module")
def reverberant_bank(zones, reverberant_config):
    return render_rir_bank(reverberant_config, zones, seed=3)


# ---------------------------------------------------------------------------------
# Geometry conventions
# ---------------------------------------------------------------------------------


def test_source_position_convention():
    centre = np.array([1.0, 2.0, 1.5])
    np.testing.assert_allclose(source_position(centre, -90.0, 2.0), [-1.0, 2.0, 1.5],
                               atol=1e-12)
    np.testing.assert_allclose(source_position(centre, 90.0, 2.0), [3.0, 2.0, 1.5],
                               atol=1e-12)
    np.testing.assert_allclose(source_position(centre, 0.0, 2.0), [1.0, 4.0, 1.5],
                               atol=1e-12)
    np.testing.assert_allclose(source_position(centre, -30.0, 2.0),
                               [0.0, 2.0 + np.sqrt(3.0), 1.5], atol=1e-12)


def test_mic_positions_channel_0_is_left():
    centre = np.array([2.0, 1.0, 1.4])
    mics = mic_positions(centre, 0.17)
    assert mics.shape == (3, 2)
    assert mics[0, 0] < mics[0, 1]  # channel 0 has the smaller x: left
    np.testing.assert_allclose(mics.mean(axis=1), centre)
    assert np.linalg.norm(mics[:, 1] - mics[:, 0]) == pytest.approx(0.17)
    # A source on the left is nearer to channel 0, one on the right nearer to channel 1.
    left = source_position(centre, -60.0, 2.0)
    right = source_position(centre, 60.0, 2.0)
    assert np.linalg.norm(left - mics[:, 0]) < np.linalg.norm(left - mics[:, 1])
    assert np.linalg.norm(right - mics[:, 1]) < np.linalg.norm(right - mics[:, 0])


def test_max_distance_in_room():
    centre = np.array([2.0, 1.0, 1.5])
    room = np.array([4.0, 5.0, 3.0])
    assert max_distance_in_room(centre, 0.0, room, 0.5) == pytest.approx(3.5)
    assert max_distance_in_room(centre, -90.0, room, 0.5) == pytest.approx(1.5)
    assert max_distance_in_room(centre, 90.0, room, 0.5) == pytest.approx(1.5)
    d = max_distance_in_room(centre, 45.0, room, 0.5)
    end = source_position(centre, 45.0, d)
    assert end[0] == pytest.approx(3.5)  # hits the right wall margin first
    assert end[1] <= 4.5 + 1e-9


# ---------------------------------------------------------------------------------
# Direct-path delays
# ---------------------------------------------------------------------------------


def test_anechoic_bank_has_order_zero(anechoic_bank):
    assert anechoic_bank.rooms[0]["max_order"] == 0
    for rir in anechoic_bank.rirs.reshape(-1, anechoic_bank.rirs.shape[-1]):
        energy = rir ** 2
        peak = int(np.argmax(energy))
        # A single (fractionally delayed) impulse: the energy sits near the peak.
        assert energy[max(peak - 20, 0):peak + 21].sum() > 0.99 * energy.sum()


def _check_delays(bank, spacing, zones):
    delays = {}
    for z, zone in enumerate(zones.zones):
        for p in range(bank.rirs.shape[2]):
            left, right = bank.rirs[0, z, p]
            azimuth = bank.azimuths[0, z, p]
            measured = delay_right_vs_left(left, right)
            expected = expected_delay(azimuth, spacing)
            assert measured == pytest.approx(expected, abs=0.5), (zone.name, azimuth)
            delays[(z, p)] = measured
    return delays


def test_left_channel_leads_for_left_sources(anechoic_bank, zones):
    for name in ("left", "front-left"):
        z = zones.index(name)
        for p in range(anechoic_bank.rirs.shape[2]):
            assert anechoic_bank.azimuths[0, z, p] < 0
            left, right = anechoic_bank.rirs[0, z, p]
            measured = delay_right_vs_left(left, right)
            assert measured > 1.0, (name, measured)
            # Far left: a sizeable share of the maximum delay spacing / c * fs.
            if name == "left":
                assert measured > 0.8 * 0.17 / SPEED_OF_SOUND * SR


def test_right_channel_leads_for_right_sources(anechoic_bank, zones):
    for name in ("right", "front-right"):
        z = zones.index(name)
        for p in range(anechoic_bank.rirs.shape[2]):
            assert anechoic_bank.azimuths[0, z, p] > 0
            left, right = anechoic_bank.rirs[0, z, p]
            measured = delay_right_vs_left(left, right)
            assert measured < -1.0, (name, measured)
            if name == "right":
                assert measured < -0.8 * 0.17 / SPEED_OF_SOUND * SR


def test_delays_match_azimuths(anechoic_bank, zones):
    _check_delays(anechoic_bank, 0.17, zones)


def test_front_zone_delay_is_small(anechoic_bank, zones):
    z = zones.index("front")
    bound = 0.17 * np.sin(np.deg2rad(18.0)) / SPEED_OF_SOUND * SR
    for p in range(anechoic_bank.rirs.shape[2]):
        left, right = anechoic_bank.rirs[0, z, p]
        assert abs(delay_right_vs_left(left, right)) <= bound + 0.2


def test_straight_ahead_has_no_delay():
    # A 4-degree centre zone with the default 3-degree margin pins the azimuth to 0.
    zones = ZoneVocabulary([
        {"name": "left", "low": -90, "high": -2, "phrase": "on the left"},
        {"name": "ahead", "low": -2, "high": 2, "phrase": "ahead"},
        {"name": "right", "low": 2, "high": 90, "phrase": "on the right"},
    ])
    bank = render_rir_bank(_anechoic(), zones, seed=5)
    np.testing.assert_allclose(bank.azimuths[0, 1], 0.0, atol=1e-9)
    for p in range(bank.rirs.shape[2]):
        left, right = bank.rirs[0, 1, p]
        assert abs(delay_right_vs_left(left, right)) < 0.1
        # Symmetric: both channels receive the same direct path.
        assert np.abs(left).max() == pytest.approx(np.abs(right).max(), rel=1e-3)
    assert delay_right_vs_left(*bank.rirs[0, 0, 0]) > 1.0
    assert delay_right_vs_left(*bank.rirs[0, 2, 0]) < -1.0


def test_wider_spacing_scales_delay(anechoic_bank, wide_bank, zones):
    # Same seed: same rooms and azimuths, only the pair differs.
    np.testing.assert_allclose(wide_bank.azimuths, anechoic_bank.azimuths)
    narrow = _check_delays(anechoic_bank, 0.17, zones)
    wide = _check_delays(wide_bank, 0.3, zones)
    for key, d_narrow in narrow.items():
        if abs(d_narrow) > 3.0:
            assert wide[key] / d_narrow == pytest.approx(0.3 / 0.17, rel=0.08)
            assert np.sign(wide[key]) == np.sign(d_narrow)


def test_reverberant_bank_keeps_direct_path_delay(reverberant_bank, zones):
    # With reflections the strongest cross-correlation peak is still the direct path
    # for sources at the sides.
    for name, sign in (("left", 1), ("right", -1)):
        z = zones.index(name)
        for room in range(reverberant_bank.rirs.shape[0]):
            left, right = reverberant_bank.rirs[room, z, 0]
            n = int(0.02 * SR) + int(np.argmax(np.abs(left) + np.abs(right)))
            measured = delay_right_vs_left(left[:n], right[:n])
            expected = expected_delay(reverberant_bank.azimuths[room, z, 0], 0.17)
            assert np.sign(measured) == sign
            assert measured == pytest.approx(expected, abs=1.0)


# ---------------------------------------------------------------------------------
# Bank contents
# ---------------------------------------------------------------------------------


def test_bank_shapes(reverberant_bank, reverberant_config, zones):
    bank = reverberant_bank
    n_samples = int(round(reverberant_config.rir_duration * reverberant_config.sample_rate))
    assert bank.rirs.shape == (2, 5, 2, 2, n_samples)
    assert bank.rirs.dtype == np.float32
    assert bank.azimuths.shape == (2, 5, 2)
    assert bank.distances.shape == (2, 5, 2)
    assert len(bank.rooms) == 2
    assert bank.zone_names == zones.names
    assert bank.sample_rate == reverberant_config.sample_rate
    assert np.isfinite(bank.rirs).all()
    assert (np.abs(bank.rirs).reshape(-1, n_samples).max(axis=1) > 0).all()
    for room in bank.rooms:
        assert room["max_order"] <= reverberant_config.max_order
        lo, hi = reverberant_config.rt60_range
        assert lo <= room["rt60"] <= hi
        for axis in range(3):
            assert (reverberant_config.room_size_min[axis] <= room["size"][axis]
                    <= reverberant_config.room_size_max[axis])


@pytest.mark.parametrize("which", ["reverberant", "anechoic"])
def test_azimuths_distances_and_positions(which, reverberant_bank, reverberant_config,
                                          anechoic_bank, zones):
    bank, config = ((reverberant_bank, reverberant_config) if which == "reverberant"
                    else (anechoic_bank, _anechoic()))
    margin = config.zone_margin
    for r, room in enumerate(bank.rooms):
        size = np.array(room["size"])
        centre = np.array(room["mic_centre"])
        # The pair itself stands inside the room.
        mics = mic_positions(centre, config.mic_spacing)
        assert (mics >= 0).all() and (mics <= size[:, None]).all()
        for z, zone in enumerate(zones.zones):
            for p in range(bank.azimuths.shape[2]):
                azimuth = bank.azimuths[r, z, p]
                distance = bank.distances[r, z, p]
                assert zone.low + margin - 1e-9 <= azimuth <= zone.high - margin + 1e-9
                assert zones.zone_of(azimuth) == zone
                reach = max_distance_in_room(centre, azimuth, size, config.wall_margin)
                assert 0 < distance <= config.distance_range[1] + 1e-9
                assert distance >= min(config.distance_range[0], reach) - 1e-9
                position = source_position(centre, azimuth, distance)
                for axis in range(2):
                    assert (config.wall_margin - 1e-6 <= position[axis]
                            <= size[axis] - config.wall_margin + 1e-6)


def test_short_rt60_in_large_room_renders(zones):
    # 0.1 s is shorter than Sabine's formula allows in a 9 x 9 x 3.5 m room (fully
    # absorbing walls give about 0.16 s): the room is rendered at its shortest.
    config = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=1,
                               rt60_range=(0.1, 0.1), room_size_min=(9.0, 9.0, 3.5),
                               room_size_max=(9.0, 9.0, 3.5))
    bank = render_rir_bank(config, zones, seed=0)
    assert np.isfinite(bank.rirs).all()
    assert 0.1 < bank.rooms[0]["rt60"] < 0.2
    # Rooms that allow the drawn time keep it exactly.
    config = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=1,
                               rt60_range=(0.3, 0.3))
    assert render_rir_bank(config, zones, seed=0).rooms[0]["rt60"] == 0.3


def test_render_is_seeded(zones):
    config = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=2)
    a = render_rir_bank(config, zones, seed=11)
    b = render_rir_bank(config, zones, seed=11)
    c = render_rir_bank(config, zones, seed=12)
    np.testing.assert_array_equal(a.rirs, b.rirs)
    np.testing.assert_array_equal(a.azimuths, b.azimuths)
    assert a.rooms == b.rooms
    assert not np.array_equal(a.azimuths, c.azimuths)


def test_custom_vocabulary_bank():
    zones = ZoneVocabulary.uniform(["l", "c", "r"], ["on the left", "ahead",
                                                       "on the right"])
    config = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=1)
    bank = render_rir_bank(config, zones, seed=0)
    assert bank.rirs.shape[:3] == (1, 3, 1)
    assert bank.zone_names == ["l", "c", "r"]
    for z, zone in enumerate(zones.zones):
        assert zones.zone_of(bank.azimuths[0, z, 0]) == zone


def test_config_dict_round_trip():
    config = SpatialiserConfig(n_rooms=2, rt60_range=(0.2, 0.3))
    options = config.to_dict()
    assert options["rt60_range"] == [0.2, 0.3]
    assert SpatialiserConfig.from_dict(options) == config


# ---------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------


def test_cached_rir_bank(tmp_path, zones, monkeypatch):
    config = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=2)
    cache = str(tmp_path / "banks")
    first = cached_rir_bank(cache, config, zones, seed=4)
    files = sorted(os.listdir(cache))
    assert files == [f"rir_bank_{bank_key(config, zones, 4)}.npz"]
    path = os.path.join(cache, files[0])
    mtime = os.stat(path).st_mtime_ns

    def must_not_render(*args, **kwargs):
        raise AssertionError("the cached bank should have been loaded")

    monkeypatch.setattr(spatialiser_module, "render_rir_bank", must_not_render)
    second = cached_rir_bank(cache, config, zones, seed=4)
    assert os.stat(path).st_mtime_ns == mtime
    assert sorted(os.listdir(cache)) == files
    np.testing.assert_array_equal(second.rirs, first.rirs)
    np.testing.assert_array_equal(second.azimuths, first.azimuths)
    np.testing.assert_array_equal(second.distances, first.distances)
    assert second.rooms == first.rooms
    assert second.zone_names == first.zone_names
    assert second.sample_rate == first.sample_rate
    assert isinstance(second.sample_rate, int)
    monkeypatch.undo()

    # Another configuration, seed or vocabulary gets a file of its own.
    other = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=1)
    assert bank_key(other, zones, 4) != bank_key(config, zones, 4)
    assert bank_key(config, zones, 5) != bank_key(config, zones, 4)
    three = ZoneVocabulary.uniform(["l", "c", "r"], ["a", "b", "c"])
    assert bank_key(config, three, 4) != bank_key(config, zones, 4)
    cached_rir_bank(cache, other, zones, seed=4)
    assert len(os.listdir(cache)) == 2
    assert not [f for f in os.listdir(cache) if "tmp" in f]


def test_bank_save_load_round_trip(tmp_path, reverberant_bank):
    path = str(tmp_path / "bank.npz")
    reverberant_bank.save(path)
    loaded = RIRBank.load(path)
    np.testing.assert_array_equal(loaded.rirs, reverberant_bank.rirs)
    assert loaded.rooms == reverberant_bank.rooms
    assert os.listdir(tmp_path) == ["bank.npz"]
