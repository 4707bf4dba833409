"""Tests of the scene mixer (spatial_clap_sb.data.mixer), with in-memory clips."""

import numpy as np
import pytest

from spatial_clap_sb.data.mixer import MixerConfig, SceneMixer
from spatial_clap_sb.data.sources import SourceClip
from spatial_clap_sb.data.spatialiser import SpatialiserConfig, render_rir_bank
from spatial_clap_sb.language import (
    N_PHRASINGS,
    ZoneVocabulary,
    compose_caption,
    permuted_captions,
)

SR = 16000
N_SCENES = 50


def delay_right_vs_left(left, right, upsample=8):
    """Delay of ``right`` behind ``left`` in samples (GCC-PHAT); > 0: left leads."""
    n = len(left)
    cross = np.fft.rfft(right, 2 * n) * np.conj(np.fft.rfft(left, 2 * n))
    cross /= np.abs(cross) + 1e-12
    size = 2 * n * upsample
    cc = np.fft.irfft(cross, size)
    cc = np.concatenate([cc[-size // 2:], cc[:size // 2]])
    return (int(np.argmax(cc)) - size // 2) / upsample


def make_clips(labels, captions_per_clip=2, seed=0, amplitude=0.3):
    """Clips with in-memory noise audio of assorted lengths; returns (clips, load)."""
    rng = np.random.default_rng(seed)
    clips, audio = [], {}
    for i, label in enumerate(labels):
        clip_id = f"clip{i:02d}"
        captions = tuple(f"sound {i} variant {j}" for j in range(captions_per_clip))
        clips.append(SourceClip(clip_id, f"/nowhere/{clip_id}.wav", captions, label))
        length = int(rng.integers(SR // 4, SR))  # shorter and longer than the scene
        audio[clip_id] = (amplitude * rng.standard_normal(length)).astype(np.float32)
    return clips, audio.__getitem__


@pytest.fixture(scope="module")
def zones():
    return ZoneVocabulary.default()


@pytest.fixture(scope="module")
def bank(zones):
    config = SpatialiserConfig(n_rooms=2, positions_per_zone=2, max_order=2)
    return render_rir_bank(config, zones, seed=0)


@pytest.fixture(scope="module")
def anechoic_bank(zones):
    config = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=0,
                               rt60_range=(0.15, 0.15), room_size_min=(6.0, 6.0, 3.0),
                               room_size_max=(7.0, 7.0, 3.0))
    return render_rir_bank(config, zones, seed=1)


@pytest.fixture(scope="module")
def config():
    return MixerConfig(scene_duration=0.5)


@pytest.fixture(scope="module")
def mixer(bank, zones, config):
    # Eight clips, six labels: two labels have two clips each.
    clips, load = make_clips(["a", "a", "b", "b", "c", "d", "e", "f"])
    return SceneMixer(clips, bank, zones, load, config)


def _draws(mixer, n_sources, count=N_SCENES, seed=0):
    return [mixer.draw(np.random.default_rng([seed, i]), n_sources) for i in range(count)]


@pytest.mark.parametrize("n_sources", [2, 3])
def test_distinct_zones_and_labels(mixer, n_sources):
    labels_seen, zones_seen = set(), set()
    for scene in _draws(mixer, n_sources):
        sources = scene["sources"]
        assert scene["n_sources"] == n_sources == len(sources)
        zones = [s["zone"] for s in sources]
        labels = [s["label"] for s in sources]
        assert len(set(zones)) == n_sources
        assert len(set(labels)) == n_sources
        assert len({s["clip_id"] for s in sources}) == n_sources
        labels_seen.update(labels)
        zones_seen.update(zones)
    # The draws cover the material, not one fixed choice.
    assert labels_seen == set("abcdef")
    assert zones_seen == set(mixer.zones.names)


def test_metadata_matches_bank_and_clips(mixer, bank):
    for scene in _draws(mixer, 3, count=20):
        assert 0 <= scene["room"] < bank.rirs.shape[0]
        for source in scene["sources"]:
            clip = mixer.by_id[source["clip_id"]]
            assert source["caption"] in clip.captions
            assert source["label"] == clip.label
            z = mixer.zones.index(source["zone"])
            p = source["position"]
            assert source["azimuth"] == pytest.approx(bank.azimuths[scene["room"], z, p],
                                                      abs=0.01)
            assert source["distance"] == pytest.approx(
                bank.distances[scene["room"], z, p], abs=0.001)
            assert mixer.zones.zone_of(source["azimuth"]).name == source["zone"]


def test_unlabelled_clips_are_distinct(bank, zones, config):
    clips, load = make_clips([None] * 4)
    mixer = SceneMixer(clips, bank, zones, load, config)
    for scene in _draws(mixer, 3):
        ids = [s["clip_id"] for s in scene["sources"]]
        assert len(set(ids)) == 3
        assert all(s["label"] is None for s in scene["sources"])
        assert len({s["zone"] for s in scene["sources"]}) == 3


def test_same_seed_same_scene(mixer):
    for n_sources in (1, 2, 3):
        a = mixer.draw(np.random.default_rng(123), n_sources)
        b = mixer.draw(np.random.default_rng(123), n_sources)
        assert a == b
        audio_a, audio_b = mixer.render(a), mixer.render(b)
        np.testing.assert_array_equal(audio_a, audio_b)
        # Rendering does not depend on what was rendered before.
        mixer.render(mixer.draw(np.random.default_rng(7), 2))
        np.testing.assert_array_equal(mixer.render(a), audio_a)
    other = mixer.draw(np.random.default_rng(124), 2)
    assert other != mixer.draw(np.random.default_rng(123), 2)


@pytest.mark.parametrize("n_sources", [1, 2, 3])
def test_render_shape_dtype_and_peak(mixer, config, n_sources):
    for scene in _draws(mixer, n_sources, count=5):
        audio = mixer.render(scene)
        assert audio.shape == (config.n_samples, 2)
        assert audio.dtype == np.float32
        assert np.isfinite(audio).all()
        assert np.abs(audio).max() <= config.peak_limit + 1e-6
        assert np.abs(audio).max() > 1e-4
        assert not np.allclose(audio[:, 0], audio[:, 1])  # stereo, not a copy


def test_render_is_the_linear_convolution_of_each_source(mixer, config):
    """Each source is its placed, scaled clip convolved with its RIR, cut to the scene
    length: the RIR tails of late samples do not wrap around to the start."""
    for n_sources in (1, 2, 3):
        scene = _draws(mixer, n_sources, count=1, seed=7)[0]
        rng = np.random.default_rng(scene["seed_draw"])
        expected = np.zeros((config.n_samples, 2))
        for source in scene["sources"]:
            dry = mixer._place(np.asarray(mixer.load(source["clip_id"]), np.float64), rng)
            dry *= config.source_rms * 10 ** (source["level"] / 20) / np.sqrt(
                np.mean(dry ** 2))
            rir = mixer.bank.rirs[scene["room"], mixer.zones.index(source["zone"]),
                                  source["position"]]
            for channel in range(2):
                expected[:, channel] += np.convolve(dry, rir[channel])[:config.n_samples]
        peak = np.abs(expected).max()
        if peak > config.peak_limit:
            expected *= config.peak_limit / peak
        rendered = mixer.render(scene)
        assert np.abs(rendered - expected).max() < 1e-5 * max(1.0, peak)


def test_a_batch_renders_each_scene_as_alone(mixer, config):
    """One pass over scenes of one to three sources (what training does) gives each
    scene's audio to float rounding, the same bits for the same batch, and keeps the
    peak limit per scene."""
    scenes = [scene for n in (1, 2, 3) for scene in _draws(mixer, n, count=4, seed=n)]
    batch = mixer.render_batch(scenes)
    assert batch.shape == (len(scenes), config.n_samples, 2)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    for scene, audio in zip(scenes, batch):
        alone = mixer.render(scene)
        assert np.abs(audio - alone).max() <= 1e-6 * max(1.0, np.abs(alone).max())
    np.testing.assert_array_equal(mixer.render_batch(scenes), batch)
    assert np.abs(batch).max(axis=(1, 2)).min() > 1e-4  # no scene left silent


def test_a_batch_scales_only_its_loud_scenes(bank, zones):
    config = MixerConfig(scene_duration=0.5, source_rms=0.8, peak_limit=0.5)
    clips, load = make_clips(["a", "b", "c"], amplitude=0.9)
    mixer = SceneMixer(clips, bank, zones, load, config)
    loud = mixer.draw(np.random.default_rng(0), 3)
    faint = dict(loud, sources=[dict(s, level=-60.0) for s in loud["sources"]])
    batch = mixer.render_batch([loud, faint])
    assert np.abs(batch[0]).max() == pytest.approx(0.5, abs=1e-4)
    # The same sources 60 dB down stay under the limit and keep their own level.
    assert np.abs(batch[1]).max() < 0.05
    assert np.abs(batch[1] - mixer.render(faint)).max() < 1e-8


@pytest.mark.parametrize("cache_mb", [0.0, 0.2, 512.0])
def test_kept_rir_spectra_render_the_same_scenes(bank, zones, config, cache_mb):
    # 0: every RIR transformed at each use; 0.2 MiB: a few kept, the rest not.
    clips, load = make_clips(["a", "b", "c", "d", "e", "f"])
    uncached = SceneMixer(clips, bank, zones, load, config, rir_spectrum_cache_mb=0.0)
    mixer = SceneMixer(clips, bank, zones, load, config, rir_spectrum_cache_mb=cache_mb)
    scenes = _draws(mixer, 3, count=20) * 2  # each RIR used again
    for scene in scenes:
        assert np.array_equal(mixer.render(scene), uncached.render(scene))
    kept = len(mixer._rir_spectra)
    assert kept <= mixer._max_cached_spectra and len(uncached._rir_spectra) == 0
    assert (kept > 0) == (cache_mb > 0)


def test_loud_scene_is_scaled_to_peak_limit(bank, zones):
    config = MixerConfig(scene_duration=0.5, source_rms=0.8, peak_limit=0.5)
    clips, load = make_clips(["a", "b", "c"], amplitude=0.9)
    mixer = SceneMixer(clips, bank, zones, load, config)
    for scene in _draws(mixer, 3, count=5):
        audio = mixer.render(scene)
        assert np.abs(audio).max() == pytest.approx(0.5, abs=1e-4)  # scaled, not clipped
        # Not clipped: no run of samples stuck at the limit.
        assert (np.abs(audio) >= 0.5 - 1e-6).sum() <= 2


@pytest.mark.parametrize("level_range", [(-6.0, 0.0), (-12.0, -3.0)])
def test_levels(bank, zones, level_range):
    config = MixerConfig(scene_duration=0.5, level_range_db=level_range)
    clips, load = make_clips(list("abcdef"))
    mixer = SceneMixer(clips, bank, zones, load, config)
    width = level_range[1] - level_range[0]
    spreads = []
    for scene in _draws(mixer, 3):
        levels = [s["level"] for s in scene["sources"]]
        assert max(levels) == 0.0  # the loudest source sits at 0 dB
        assert all(-width - 0.01 <= level <= 0.0 for level in levels)
        if level_range[1] == 0.0:
            assert all(level_range[0] <= level <= level_range[1] for level in levels)
        spreads.append(min(levels))
    assert min(spreads) < -1.0  # levels vary
    single = mixer.draw(np.random.default_rng(0), 1)
    assert single["sources"][0]["level"] == 0.0


def test_level_sets_dry_rms(anechoic_bank, zones):
    # One source per scene, no peak limiting: the level scales the whole scene.
    config = MixerConfig(scene_duration=0.5, source_rms=0.01)
    clips, load = make_clips(["a"])
    mixer = SceneMixer(clips, anechoic_bank, zones, load, config)
    scene = mixer.draw(np.random.default_rng(0), 1)
    quiet = dict(scene, sources=[dict(scene["sources"][0], level=-6.0)])
    ratio = np.sqrt(np.mean(mixer.render(quiet) ** 2) / np.mean(mixer.render(scene) ** 2))
    assert ratio == pytest.approx(10 ** (-6 / 20), rel=1e-3)


def test_rendered_direction(anechoic_bank, zones):
    # A lone source on the left reaches channel 0 first, one on the right channel 1.
    config = MixerConfig(scene_duration=0.5)
    clips, load = make_clips(["a"])
    mixer = SceneMixer(clips, anechoic_bank, zones, load, config)
    seen = set()
    for i in range(40):
        scene = mixer.draw(np.random.default_rng([9, i]), 1)
        zone = scene["sources"][0]["zone"]
        if zone not in ("left", "right"):
            continue
        seen.add(zone)
        audio = mixer.render(scene)
        delay = delay_right_vs_left(audio[:, 0], audio[:, 1])
        azimuth = scene["sources"][0]["azimuth"]
        expected = -0.17 * np.sin(np.deg2rad(azimuth)) / 343.0 * SR
        assert np.sign(delay) == (1 if zone == "left" else -1)
        assert delay == pytest.approx(expected, abs=0.5)
    assert seen == {"left", "right"}


@pytest.mark.parametrize("n_sources", [1, 2, 3])
def test_captions_follow_the_language_split(mixer, zones, n_sources):
    for scene in _draws(mixer, n_sources, count=10):  # the training language
        assert len(scene["captions"]) == len(scene["permuted_captions"]) == N_PHRASINGS
        assert scene["language"] == "train"
        for caption in scene["captions"]:
            assert all(s["caption"] in caption.lower() for s in scene["sources"])
    template = mixer.draw(np.random.default_rng(0), n_sources, "template")
    assert template["captions"] == [compose_caption(template["sources"], p, zones)
                                    for p in range(N_PHRASINGS)]
    assert template["permuted_captions"][0] == permuted_captions(template["sources"],
                                                                 0, zones)


def test_captions_do_not_change_the_audio(mixer):
    scenes = [mixer.draw(np.random.default_rng(5), 2, language)
              for language in ("train", "template")]
    assert scenes[0]["sources"] == scenes[1]["sources"]
    assert np.array_equal(mixer.render(scenes[0]), mixer.render(scenes[1]))


def test_too_few_labels_raises(bank, zones, config):
    clips, load = make_clips(["a", "a", "b", "b"])
    mixer = SceneMixer(clips, bank, zones, load, config)
    mixer.draw(np.random.default_rng(0), 2)  # two labels are enough for two sources
    with pytest.raises(ValueError, match="different sounds"):
        mixer.draw(np.random.default_rng(0), 3)


def test_n_sources_out_of_range_raises(bank, config):
    three = ZoneVocabulary.uniform(["l", "c", "r"], ["on the left", "ahead",
                                                       "on the right"])
    three_bank = render_rir_bank(SpatialiserConfig(n_rooms=1, positions_per_zone=1,
                                                   max_order=1), three, seed=0)
    clips, load = make_clips(list("abcdef"))
    mixer = SceneMixer(clips, three_bank, three, load, config)
    assert len(mixer.draw(np.random.default_rng(0), 3)["sources"]) == 3
    for bad in (0, 4):
        with pytest.raises(ValueError, match="n_sources"):
            mixer.draw(np.random.default_rng(0), bad)


def test_mismatched_vocabulary_raises(bank, config):
    three = ZoneVocabulary.uniform(["l", "c", "r"], ["a", "b", "c"])
    clips, load = make_clips(list("abc"))
    with pytest.raises(ValueError, match="vocabulary"):
        SceneMixer(clips, bank, three, load, config)
    renamed = ZoneVocabulary.uniform(["w", "x", "y", "z", "v"], list("abcde"))
    with pytest.raises(ValueError):
        SceneMixer(clips, bank, renamed, load, config)


def test_mismatched_sample_rate_raises(bank, zones):
    clips, load = make_clips(list("abc"))
    with pytest.raises(ValueError, match="sample rate"):
        SceneMixer(clips, bank, zones, load, MixerConfig(sample_rate=8000))
