"""Tests of the source-clip interface (spatial_clap_sb.data.sources) and audio I/O."""

import os
import warnings
from math import gcd

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly, welch

from spatial_clap_sb.data.audio_io import (
    AudioReadError,
    ChannelCountError,
    load_mono,
    load_stereo,
    read_audio,
    read_float32,
    resample,
    read_stereo_span,
    write_audio,
)
from spatial_clap_sb.data.sources import (
    SourceClip,
    SourceCSVError,
    load_clip,
    normalize_caption,
    read_audiocaps_csv,
    read_clips_csv,
    read_clotho_csv,
    split_clips,
)
from spatial_clap_sb.data.synthesis import GENERATED_CLASSES, SYNTHESIZERS, generate_library

SR = 16000


def _tone(seconds=0.2, sr=SR, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def _wav(path, seconds=0.2, sr=SR, channels=1):
    write_audio(path, _tone(seconds, sr, channels), sr)
    return str(path)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _files(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            out[os.path.relpath(full, folder)] = full
    return out


# --------------------------------------------------------------------------- library


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    clips = generate_library(folder, n_clips_per_class=3, seed=0)
    return folder, clips


def test_classes_and_phrasings():
    assert len(GENERATED_CLASSES) >= 24
    assert list(GENERATED_CLASSES) == list(SYNTHESIZERS)
    for label, phrasings in GENERATED_CLASSES.items():
        assert label == label.lower() and label.isidentifier()
        assert len(phrasings) >= 3, label
        assert len(set(phrasings)) == len(phrasings)
        for p in phrasings:
            assert p == normalize_caption(p) and p == p.lower(), p
            assert not p.endswith(".") and len(p.split()) >= 2, p


def test_library_layout_and_clips(library):
    folder, clips = library
    assert len(clips) == 3 * len(GENERATED_CLASSES)
    assert len({c.clip_id for c in clips}) == len(clips)
    for clip in clips:
        assert os.path.isabs(clip.path) and os.path.isfile(clip.path)
        assert clip.captions == GENERATED_CLASSES[clip.label]
        assert os.path.relpath(clip.path, folder) == os.path.join(
            clip.label, clip.clip_id + ".wav"
        )
        info = sf.info(clip.path)
        assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
        assert 1.5 - 1e-3 <= info.frames / SR <= 2.5 + 1e-3
        audio = load_clip(clip, SR)
        peak = np.abs(audio).max()
        assert 0.29 <= peak <= 0.91, (clip.clip_id, peak)
        assert audio.std() > 0.005, clip.clip_id
    # the CSV it writes reads back to the same clips
    assert read_clips_csv(os.path.join(folder, "library.csv")) == clips


def test_library_deterministic_and_idempotent(tmp_path, library):
    _, reference = library
    classes = ["bell", "rain", "clock"]
    a = generate_library(tmp_path / "a", n_clips_per_class=3, seed=0, classes=classes)
    # same seed: bit-identical, also to the full library (clips do not depend on the
    # class selection or on generation order)
    by_id = {c.clip_id: c for c in reference}
    for clip in a:
        with open(clip.path, "rb") as f1, open(by_id[clip.clip_id].path, "rb") as f2:
            assert f1.read() == f2.read()

    files = _files(tmp_path / "a")
    mtimes = {k: os.stat(v).st_mtime_ns for k, v in files.items()}
    again = generate_library(tmp_path / "a", n_clips_per_class=3, seed=0, classes=classes)
    assert again == a
    assert {k: os.stat(v).st_mtime_ns for k, v in _files(tmp_path / "a").items()} == mtimes

    # changed options regenerate; another seed gives other audio
    before = sf.read(a[0].path)[0]
    b = generate_library(tmp_path / "a", n_clips_per_class=3, seed=1, classes=classes)
    assert [c.clip_id for c in b] == [c.clip_id for c in a]
    assert os.stat(b[0].path).st_mtime_ns != mtimes[os.path.join("bell", "bell_000.wav")]
    after = sf.read(b[0].path)[0]
    assert before.shape != after.shape or not np.array_equal(before, after)
    c = generate_library(tmp_path / "a", n_clips_per_class=2, seed=1, classes=classes)
    assert len(c) == 6


def test_library_rejects_unknown_class(tmp_path):
    with pytest.raises(ValueError, match="no_such_class"):
        generate_library(tmp_path, classes=["bell", "no_such_class"])


def test_classes_differ_spectrally(library):
    """Band-energy log-spectra (24 log-spaced bands, a coarse mel-like view) of clips of
    one class are closer together than those of different classes, for every class."""
    _, clips = library
    edges = np.geomspace(60, 8000, 25)
    feats, labels = [], []
    for clip in clips:
        freqs, psd = welch(load_clip(clip, SR), SR, nperseg=512)
        bands = np.bincount(np.searchsorted(edges, freqs), weights=psd, minlength=26)[1:25]
        logp = np.log10(bands + 1e-10)
        feats.append(logp - logp.mean())  # level-independent
        labels.append(clip.label)
    feats = np.array(feats)
    labels = np.array(labels)
    dist = np.sqrt(((feats[:, None] - feats[None]) ** 2).mean(-1))
    same = labels[:, None] == labels[None]
    off_diag = ~np.eye(len(labels), dtype=bool)
    assert dist[same & off_diag].mean() < 0.5 * dist[~same].mean()
    for label in GENERATED_CLASSES:
        rows = (labels == label)[:, None]
        within = dist[rows & same & off_diag].mean()
        between = dist[rows & ~same].mean()
        assert within < between, (label, within, between)


# --------------------------------------------------------------------------- CSV readers


def test_read_clips_csv_happy_path(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "dog.wav")
    _wav(audio / "sub" / "car.wav")
    _wav(tmp_path / "other" / "dog.wav")  # same stem, other folder
    csv_path = _write(
        tmp_path / "clips.csv",
        "path,caption,label\n"
        "audio/dog.wav,  A dog barks. ,dog\n"
        "audio/sub/car.wav,a car passes by,\n"
        'audio/dog.wav,"A dog yelps, twice",dog\n'
        "\n"
        f"{tmp_path / 'other' / 'dog.wav'},another dog barks,\n",
    )
    clips = read_clips_csv(csv_path)
    assert len(clips) == 3
    dog, car, dog2 = clips
    assert dog.captions == ("a dog barks", "a dog yelps, twice")
    assert dog.label == "dog" and car.label is None
    assert dog.path == str(audio / "dog.wav")
    assert car.clip_id == "car"
    assert dog.clip_id != dog2.clip_id and dog.clip_id.startswith("dog_")
    # label column optional; audio_root overrides the CSV folder
    csv2 = _write(tmp_path / "other" / "no_label.csv", "caption,path\nbark,dog.wav\n")
    only = read_clips_csv(csv2, audio_root=audio)
    assert only[0].path == str(audio / "dog.wav") and only[0].label is None


@pytest.mark.parametrize(
    "text, pattern, exc",
    [
        (
            "file,caption\na.wav,x\n",
            r"missing required column\(s\) path.*'file'",
            SourceCSVError,
        ),
        (
            "path,caption\na.wav,a sound\na.wav,  . \n",
            r"row 2 \(line 3\): empty caption",
            SourceCSVError,
        ),
        ("path,caption\n,a sound\n", r"row 1 \(line 2\): empty path", SourceCSVError),
        (
            "path,caption\na.wav,a sound\nmissing.wav,a sound\n",
            r"missing\.wav.*row 2",
            FileNotFoundError,
        ),
    ],
)
def test_read_clips_csv_errors(tmp_path, text, pattern, exc):
    _wav(tmp_path / "a.wav")
    csv_path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(exc, match=pattern) as err:
        read_clips_csv(csv_path)
    assert "bad.csv" in str(err.value)


def test_read_clips_csv_conflicting_labels(tmp_path):
    _wav(tmp_path / "a.wav")
    csv_path = _write(
        tmp_path / "c.csv", "path,caption,label\na.wav,x y,dog\na.wav,z w,cat\n"
    )
    with pytest.raises(SourceCSVError, match="row 2"):
        read_clips_csv(csv_path)


def test_read_audiocaps_csv(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "abc_30.wav")
    _wav(audio / "Ydef.wav")
    sf.write(str(audio / "77.flac"), _tone(), SR)
    csv_path = _write(
        tmp_path / "train.csv",
        "audiocap_id,youtube_id,start_time,caption\n"
        "1,abc,30,A man speaks.\n"
        "2,def,0,Birds chirp\n"
        "3,abc,30,a man talks\n"
        "4,gone,10,never downloaded\n"
        "5,gone2,10,never downloaded either\n"
        "77,ghi,20,rain falls\n",
    )
    with pytest.warns(UserWarning, match="skipped 2 of 6 rows"):
        clips = read_audiocaps_csv(csv_path, audio)
    assert [c.captions for c in clips] == [
        ("a man speaks", "a man talks"),
        ("birds chirp",),
        ("rain falls",),
    ]
    assert all(c.label is None for c in clips)
    assert clips[2].path.endswith("77.flac")
    bad = _write(tmp_path / "bad.csv", "youtube_id,start_time,caption\nabc,30,x\n")
    with pytest.raises(SourceCSVError, match="audiocap_id"):
        read_audiocaps_csv(bad, audio)


def test_read_clotho_csv(tmp_path):
    audio = tmp_path / "development"
    _wav(audio / "Forest walk.wav")
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    csv_path = _write(
        tmp_path / "clotho_captions.csv",
        header
        + 'Forest walk.wav,Leaves rustle.,"Steps, on leaves",c three,c four,c five\n',
    )
    (clip,) = read_clotho_csv(csv_path, audio)
    assert clip.captions == (
        "leaves rustle",
        "steps, on leaves",
        "c three",
        "c four",
        "c five",
    )
    assert clip.clip_id == "Forest_walk"
    bad = _write(tmp_path / "bad.csv", header + "Forest walk.wav,a,b,,d,e\n")
    with pytest.raises(SourceCSVError, match=r"bad\.csv, row 1.*caption_3"):
        read_clotho_csv(bad, audio)


# --------------------------------------------------------------------------- splits


def _labelled_clips():
    clips = []
    for label, count in (("a", 20), ("b", 7), ("c", 3), ("d", 2)):
        clips += [
            SourceClip(f"{label}{i:02d}", f"/x/{label}{i}.wav", ("s t",), label)
            for i in range(count)
        ]
    clips += [SourceClip(f"u{i:02d}", f"/x/u{i}.wav", ("s t",)) for i in range(10)]
    return clips


def test_split_clips():
    clips = _labelled_clips()
    splits = split_clips(clips, seed=0)
    ids = {name: [c.clip_id for c in v] for name, v in splits.items()}
    assert set(ids) == {"train", "valid", "test"}
    all_ids = sum(ids.values(), [])
    assert sorted(all_ids) == sorted(c.clip_id for c in clips)  # disjoint and complete
    for label in ("a", "b", "c"):
        for name in ids:
            assert any(c.label == label for c in splits[name]), (label, name)
    assert len(ids["train"]) > len(ids["valid"])
    # deterministic, independent of input order, and seed-dependent
    shuffled = list(reversed(clips))
    assert split_clips(shuffled, seed=0) == splits
    assert split_clips(clips, seed=1) != splits
    # no labels at all
    plain = [SourceClip(f"p{i:02d}", f"/x/p{i}.wav", ("s t",)) for i in range(10)]
    sizes = {k: len(v) for k, v in split_clips(plain).items()}
    assert sizes == {"train": 8, "valid": 1, "test": 1}
    with pytest.raises(ValueError, match="Duplicate"):
        split_clips(plain + plain[:1])


# --------------------------------------------------------------------------- audio I/O


def test_resampling_changes_length(tmp_path):
    path = _wav(tmp_path / "a.wav", seconds=1.0, sr=8000)
    data, sr = read_audio(path, 16000)
    assert sr == 8000 and data.shape == (16000, 1) and data.dtype == np.float32
    mono = load_mono(path, 16000)
    assert mono.shape == (16000,)
    assert load_mono(path, 8000).shape == (8000,)


def test_multichannel_downmix_warns(tmp_path):
    path = _wav(tmp_path / "three.wav", channels=3)
    with pytest.warns(UserWarning, match=r"three\.wav has 3 channels.*row 4"):
        mono = load_mono(path, SR, context="row 4 of clips.csv")
    assert mono.ndim == 1


def test_corrupt_and_empty_files(tmp_path):
    corrupt = tmp_path / "noise.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(
        AudioReadError, match=r"noise\.wav is not a readable audio file.*row 9"
    ):
        load_mono(corrupt, SR, context="row 9")
    empty = str(tmp_path / "empty.wav")
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), SR)
    with pytest.raises(AudioReadError, match=r"empty\.wav is empty"):
        read_audio(empty, SR)
    nan = str(tmp_path / "nan.wav")
    sf.write(nan, np.full(100, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioReadError, match=r"nan\.wav holds no finite sample"):
        read_audio(nan, SR)
    with pytest.raises(FileNotFoundError, match=r"missing\.wav"):
        read_audio(tmp_path / "missing.wav", SR)


def test_load_stereo(tmp_path):
    stereo = _wav(tmp_path / "st.wav", channels=2)
    assert load_stereo(stereo, SR).shape == (int(0.2 * SR), 2)
    mono = _wav(tmp_path / "mono.wav")
    with pytest.raises(
        ChannelCountError, match=r"mono\.wav has 1 channel.*needs two channels"
    ):
        load_stereo(mono, SR)
    with pytest.warns(UserWarning, match="meaningless"):
        dup = load_stereo(mono, SR, allow_mono=True)
    assert dup.shape[1] == 2 and np.array_equal(dup[:, 0], dup[:, 1])
    four = _wav(tmp_path / "four.wav", channels=4)
    with pytest.raises(ChannelCountError, match="4 channel"):
        load_stereo(four, SR, allow_mono=True)


def test_write_audio_atomic(tmp_path):
    path = tmp_path / "deep" / "er" / "x.wav"
    write_audio(path, _tone(channels=2), SR)
    assert sf.info(str(path)).subtype == "PCM_16"
    assert os.listdir(path.parent) == ["x.wav"]  # no temp file left behind
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_audio(path, _tone(), SR)  # overwrite, no warning
    with pytest.warns(UserWarning, match="clipped"):
        write_audio(path, 2 * np.ones(10), SR)


def test_load_clip_requires_caption(tmp_path):
    path = _wav(tmp_path / "a.wav")
    with pytest.raises(ValueError, match="no usable caption"):
        load_clip(SourceClip("a", path, ()), SR)
    assert load_clip(SourceClip("a", path, ("x y",)), SR).ndim == 1


@pytest.mark.parametrize("orig_sr, target_sr", [(44100, 16000), (48000, 16000),
                                                (22050, 16000), (8000, 16000),
                                                (16000, 44100), (96000, 16000),
                                                (24000, 16000)])
@pytest.mark.parametrize("n_samples", [1, 7, 4411, 20003])
def test_resample_matches_scipy_resample_poly(orig_sr, target_sr, n_samples):
    """The cached polyphase kernel applies SciPy's filter: same length, same samples up
    to float rounding, mono and stereo."""
    g = gcd(orig_sr, target_sr)
    rng = np.random.default_rng(n_samples)
    for shape in ((n_samples,), (n_samples, 2)):
        data = rng.uniform(-1, 1, shape).astype(np.float32)
        expected = resample_poly(data, target_sr // g, orig_sr // g, axis=0)
        result = resample(data, orig_sr, target_sr)
        assert result.shape == expected.shape and result.dtype == np.float32
        assert np.abs(result - expected).max() < 1e-5


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_U8"), ("WAV", "PCM_16"),
                                          ("WAV", "PCM_24"), ("WAV", "PCM_32"),
                                          ("WAV", "FLOAT"), ("FLAC", "PCM_S8"),
                                          ("FLAC", "PCM_16"), ("FLAC", "PCM_24")])
def test_reads_equal_libsndfile_float_reads_to_the_bit(tmp_path, fmt, subtype):
    """Integer PCM is read as integers and scaled by the package: every sample equals
    libsndfile's own float conversion, whole files and spans alike."""
    path = str(tmp_path / f"a.{fmt.lower()}")
    noise = np.random.default_rng(0).uniform(-1, 1, (44100, 2))
    noise[:4] = [[-1.0, 1.0], [0.0, -0.0], [2 ** -15, -(2 ** -23)], [0.999, -0.999]]
    sf.write(path, noise, 44100, format=fmt, subtype=subtype)
    expected, _ = sf.read(path, dtype="float32", always_2d=True)
    with sf.SoundFile(path) as f:
        whole = read_float32(f)
        f.seek(1000)
        span = read_float32(f, 5000)
    assert whole.dtype == np.float32 and np.array_equal(whole, expected)
    assert np.array_equal(span, expected[1000:6000])
    assert np.array_equal(read_audio(path, 44100)[0], expected)
    assert np.allclose(read_stereo_span(path, 16000, 3000, 9000),
                       resample(expected, 44100, 16000)[3000:9000], atol=1e-6)
