"""A user's data checked before anything is rendered: bad files, labels of any kind,
splits that cannot fill their scenes, and stereo recordings made into manifests."""
import json
import os

import numpy as np
import pytest
import speechbrain as sb

from spatial_clap_sb.cli import main
from spatial_clap_sb.data.audio_io import write_audio
from spatial_clap_sb.data.checks import (
    DataCheckError,
    Problem,
    audio_problem,
    check_split_capacity,
    enforce,
)
from spatial_clap_sb.data.pipelines import scene_dataset, write_manifest
from spatial_clap_sb.data.prepare import prepare_spatial_scenes
from spatial_clap_sb.data.sources import SourceClip, split_clips

SR = 16000
RNG = np.random.default_rng(0)
TINY_ROOMS = dict(n_rooms=1, positions_per_zone=1, max_order=1)


def noise(seconds, channels=1, sr=SR):
    shape = (int(seconds * sr),) if channels == 1 else (int(seconds * sr), channels)
    return (0.1 * RNG.standard_normal(shape)).astype(np.float32)


def write_clips_csv(tmp_path, n_clips, label=lambda i: f"thing{i}", extra_rows=()):
    """``n_clips`` noise clips, written with ``label(i)`` as their label."""
    rows = ["path,caption,label"]
    for i in range(n_clips):
        write_audio(tmp_path / f"clip{i}.wav", noise(0.3), SR)
        rows.append(f"clip{i}.wav,a sound number {i},{label(i)}")
    rows.extend(extra_rows)
    path = tmp_path / "clips.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def prepare(tmp_path, csv_path, counts, **options):
    return prepare_spatial_scenes(
        str(tmp_path / "data"), source_csv=str(csv_path), scene_counts=counts,
        spatialiser=TINY_ROOMS, mixer=dict(scene_duration=0.5), seed=3, **options)


# ------------------------------------------------------------------------ audio files


@pytest.mark.parametrize("make, stereo, reason", [
    (lambda p: write_audio(p, noise(1.0), SR), True, "1 channel"),
    (lambda p: write_audio(p, noise(1.0, 2, 8000), 8000), True, "8000 Hz is below"),
    (lambda p: p.write_bytes(b"RIFF0000WAVEjunk"), False, "not a readable audio file"),
    (lambda p: write_audio(p, noise(0.05), SR), False, "0.050 s long"),
    (lambda p: write_audio(p, np.zeros(SR, np.float32), SR), False, "silent"),
    (lambda p: None, False, "file not found"),
])
def test_audio_problem_names_what_is_wrong(tmp_path, make, stereo, reason):
    path = tmp_path / "a.wav"
    make(path)
    assert reason in audio_problem(str(path), SR, stereo=stereo)


def test_audio_problem_finds_non_finite_samples(tmp_path):
    import soundfile as sf

    data = noise(1.0)
    data[100] = np.nan
    sf.write(tmp_path / "nan.wav", data, SR, subtype="FLOAT")
    assert "1 non-finite" in audio_problem(str(tmp_path / "nan.wav"), SR)


def test_audio_problem_accepts_good_files(tmp_path):
    write_audio(tmp_path / "s.wav", noise(1.0, 2, 44100), 44100)
    assert audio_problem(str(tmp_path / "s.wav"), SR, stereo=True) is None
    assert audio_problem(str(tmp_path / "s.wav"), SR) is None  # downmixed as a clip


def test_enforce_stops_with_every_problem_or_skips():
    problems = [Problem("a.wav", "silent"), Problem("b.wav", "1 channel(s)")]
    with pytest.raises(DataCheckError) as error:
        enforce(problems, "stop", "clips.csv", "Fix it.")
    assert "clips.csv: 2 bad" in str(error.value)
    assert "a.wav: silent" in str(error.value) and "b.wav: 1 channel" in str(error.value)
    assert enforce(problems, "skip", "clips.csv", "") == {"a.wav", "b.wav"}
    with pytest.raises(ValueError, match="on_bad"):
        enforce(problems, "ignore", "clips.csv", "")


# ------------------------------------------------------------------------------ splits


def clips_with(labels):
    return [SourceClip(f"c{i:03d}", f"/x/c{i}.wav", ("a sound",), label)
            for i, label in enumerate(labels)]


def test_one_clip_per_label_is_split_by_clip():
    splits = split_clips(clips_with([f"thing{i}" for i in range(93)]))
    sizes = {name: len(clips) for name, clips in splits.items()}
    assert sizes == {"train": 75, "valid": 9, "test": 9}  # 93 x 0.8/0.1/0.1


def test_repeated_labels_stay_stratified_and_rare_ones_are_pooled():
    labels = ["dog"] * 10 + ["bell"] * 10 + [f"rare{i}" for i in range(20)]
    splits = split_clips(clips_with(labels), seed=5)
    for name, clips in splits.items():
        assert {"dog", "bell"} <= {c.label for c in clips}, name
        assert any(c.label.startswith("rare") for c in clips), name
    assert sum(map(len, splits.values())) == 40


def test_label_disjoint_split_keeps_each_label_in_one_split():
    labels = [f"class{i % 12}" for i in range(60)]
    splits = split_clips(clips_with(labels), split_by="label", seed=2)
    seen = {name: {c.label for c in clips} for name, clips in splits.items()}
    assert all(seen[name] for name in seen)
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["valid"]
    assert not seen["valid"] & seen["test"]
    assert sum(map(len, seen.values())) == 12


def test_split_by_clip_ignores_labels():
    labels = ["dog"] * 30
    by_clip = split_clips(clips_with(labels), split_by="clip", seed=1)
    assert {name: len(c) for name, c in by_clip.items()} == {
        "train": 24, "valid": 3, "test": 3}
    with pytest.raises(ValueError, match="split_by"):
        split_clips(clips_with(labels), split_by="class")


def test_split_capacity_names_the_short_split():
    splits = {"train": clips_with(["a", "b", "c"]), "test": clips_with(["a", "a"])}
    check_split_capacity(splits, {"train": 3}, "clips.csv", "")
    with pytest.raises(DataCheckError) as error:
        check_split_capacity(splits, {"train": 2, "test": 3}, "clips.csv", "Add clips.")
    message = str(error.value)
    assert "clips.csv" in message and "test: 2 clips with 1 distinct label" in message
    assert "train" not in message.split("\n", 1)[1].split("Add")[0]
    assert message.endswith("Add clips.")


# ----------------------------------------------------------------------- prepare step


def test_csv_with_one_clip_per_label_prepares(tmp_path):
    csv_path = write_clips_csv(tmp_path, 20)
    counts = {"train": {1: 2, 2: 2}, "valid": {2: 1}, "test_2src": {2: 2}}
    paths = prepare(tmp_path, csv_path, counts, heldout_language=False)
    test, train = load(paths["test_2src"]), load(paths["train"])
    heard = {s["clip_id"] for e in train.values() for s in e["sources"]}
    assert all(s["clip_id"] not in heard for e in test.values() for s in e["sources"])


def test_csv_that_cannot_fill_a_split_fails_before_rendering(tmp_path):
    csv_path = write_clips_csv(tmp_path, 12)  # split 10/1/1: test holds one clip
    counts = {"train": {1: 2, 2: 2}, "valid": {1: 1}, "test_3src": {3: 2}}
    with pytest.raises(DataCheckError) as error:
        prepare(tmp_path, csv_path, counts)
    message = str(error.value)
    assert str(csv_path) in message
    assert "test: 1 clips with 1 distinct label(s), but its scenes have up to 3" in message
    assert "--split_fractions" in message and "--scene_counts" in message
    data = tmp_path / "data"
    assert not (data / "scenes").exists() and not (data / "rir_banks").exists()
    assert not (data / "manifests").exists()


def test_bad_clips_stop_the_prepare_with_one_report(tmp_path):
    bad_rows = []
    write_audio(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    write_audio(tmp_path / "phone.wav", noise(1.0, sr=8000), 8000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    for name in ("silent", "phone", "broken"):
        bad_rows.append(f"{name}.wav,a {name} sound,{name}")
    csv_path = write_clips_csv(tmp_path, 20, extra_rows=bad_rows)
    counts = {"train": {1: 2, 2: 2}, "valid": {2: 1}, "test_2src": {2: 2}}
    with pytest.raises(DataCheckError) as error:
        prepare(tmp_path, csv_path, counts)
    message = str(error.value)
    assert "3 bad file(s)" in message
    for name, reason in [("silent", "silent"), ("phone", "8000 Hz"),
                         ("broken", "not a readable")]:
        line = next(line for line in message.splitlines() if f"{name}.wav" in line)
        assert reason in line
    assert "--on_bad_data=skip" in message
    assert not (tmp_path / "data" / "scenes").exists()

    paths = prepare(tmp_path, csv_path, counts, on_bad_data="skip",
                    heldout_language=False)
    used = set()
    for path in paths.values():
        for entry in load(path).values():
            used.update(s["clip_id"] for s in entry["sources"])
    assert used and not used & {"silent", "phone", "broken"}


# ------------------------------------------------------------------------- manifests


def test_write_manifest_keeps_braces_in_captions(tmp_path):
    write_audio(tmp_path / "s.wav", noise(0.5, 2), SR)
    caption = "a {muffled} thump, then {} and a lone { brace"
    write_manifest(str(tmp_path / "m.json"), {"s": {
        "wav": "{data_root}/s.wav", "caption": caption,
        "sources": [{"caption": "a {muffled} thump", "zone": "left"}]}})
    dataset = scene_dataset(str(tmp_path / "m.json"), str(tmp_path), SR)
    item = dataset[0]
    assert item["caption"] == caption and item["sig"].shape == (SR // 2, 2)
    assert item["sources"][0]["caption"] == "a {muffled} thump"


def recordings_folder(tmp_path):
    """Twelve good stereo recordings plus a mono, an 8 kHz and a corrupt one."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    rows = ["path,caption,zones,source_captions"]
    for i in range(12):
        write_audio(folder / f"take{i}.wav", noise(1.0, 2), SR)
        zones = "left" if i % 2 else "left;right"
        sounds = "a kettle whistles" if i % 2 else "a kettle whistles;a dog barks"
        rows.append(f"take{i}.wav,Scene {i} in the kitchen.,{zones},{sounds}")
    write_audio(folder / "mono.wav", noise(1.0), SR)
    write_audio(folder / "phone.wav", noise(1.0, 2, 8000), 8000)
    (folder / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
    for name in ("mono", "phone", "corrupt"):
        rows.append(f"{name}.wav,a {name} recording,front,")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return folder, tmp_path / "captions.csv"


def test_manifest_command_reports_each_bad_file_and_writes_nothing(tmp_path, capsys):
    folder, captions = recordings_folder(tmp_path)
    status = main(["manifest", "--audio", str(folder), "--captions", str(captions),
                   "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert status == 1
    assert "mono.wav: 1 channel(s); a stereo recording is needed" in error
    assert "phone.wav: sample rate 8000 Hz is below the model's 16000 Hz" in error
    assert "corrupt.wav: not a readable audio file" in error
    assert "take" not in error
    assert not (tmp_path / "out").exists()


def test_manifest_command_skips_bad_files_and_splits_the_rest(tmp_path, capsys):
    folder, captions = recordings_folder(tmp_path)
    status = main(["manifest", "--audio", str(folder), "--captions", str(captions),
                   "--output", str(tmp_path / "out"), "--on_bad_data", "skip"])
    assert status == 0, capsys.readouterr().err
    entries = {}
    for split in ("train", "valid", "test"):
        data = sb.dataio.dataio.load_data_json(str(tmp_path / "out" / f"{split}.json"))
        assert data, split
        assert not set(data) & set(entries)  # every recording in one split only
        entries.update(data)
    assert sorted(entries) == sorted(f"take{i}" for i in range(12))
    assert entries["take1"]["sources"] == [{"caption": "a kettle whistles",
                                            "zone": "left"}]
    assert [s["zone"] for s in entries["take0"]["sources"]] == ["left", "right"]
    assert entries["take0"]["caption"] == "scene 0 in the kitchen"
    dataset = scene_dataset(str(tmp_path / "out" / "train.json"), "", SR)
    item = dataset[0]
    assert item["sig"].shape == (SR, 2)


def test_manifest_command_rejects_unknown_zones_by_row(tmp_path, capsys):
    folder = tmp_path / "r"
    folder.mkdir()
    write_audio(folder / "a.wav", noise(1.0, 2), SR)
    (tmp_path / "c.csv").write_text("path,caption,zones\na.wav,a hum,upstairs\n")
    status = main(["manifest", "--audio", str(folder), "--captions",
                   str(tmp_path / "c.csv"), "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert status == 1
    assert "row 1 (line 2) (a.wav): unknown zone(s) upstairs" in error
    assert os.path.exists(folder / "a.wav")


# ------------------------------------------------------------- a user's own manifests


def test_a_truncated_wav_is_found(tmp_path):
    write_audio(tmp_path / "full.wav", noise(2.0, 2), SR)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    assert audio_problem(str(tmp_path / "full.wav"), SR, stereo=True) is None
    assert "truncated" in audio_problem(str(tmp_path / "cut.wav"), SR, stereo=True)


def bad_manifest(tmp_path):
    """A manifest with one good entry and one entry per kind of bad data."""
    import soundfile as sf

    write_audio(tmp_path / "good.wav", noise(1.0, 2), SR)
    write_audio(tmp_path / "unicode.wav", noise(1.0, 2), SR)
    nan = noise(1.0, 2)
    nan[5, 1] = np.inf
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    write_audio(tmp_path / "mono.wav", noise(1.0), SR)
    write_audio(tmp_path / "low.wav", noise(1.0, 2, 8000), 8000)
    write_audio(tmp_path / "long.wav", noise(2.0, 2), SR)
    data = (tmp_path / "long.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    entries = {
        "good": ("good.wav", "a kettle whistles on the left"),
        "unicode": ("unicode.wav", "un café bruyant à gauche"),
        "nan": ("nan.wav", "a hum"),
        "mono": ("mono.wav", "a hum"),
        "low": ("low.wav", "a hum"),
        "cut": ("cut.wav", "a hum"),
        "braces": ("good.wav", "a {loud} hum"),
        "empty": ("good.wav", " "),
    }
    lines = [f'"{key}": {{"wav": "{{data_root}}/{wav}", "caption": "{caption}"}}'
             for key, (wav, caption) in entries.items()]
    lines.append('"good": {"wav": "{data_root}/good.wav", "caption": "again"}')
    path = tmp_path / "mine.json"
    path.write_text("{" + ",\n".join(lines) + "}", encoding="utf-8")
    return path


def test_every_bad_entry_of_a_manifest_is_named(tmp_path):
    from spatial_clap_sb.data.checks import manifest_problems

    path = bad_manifest(tmp_path)
    found = {p.where.split(": ", 1)[1]: p.reason
             for p in manifest_problems(str(path), str(tmp_path), SR)}
    assert set(found) == {"nan", "mono", "low", "cut", "braces", "empty", "good"}
    assert "non-finite" in found["nan"] and "1 channel" in found["mono"]
    assert "8000 Hz" in found["low"] and "truncated" in found["cut"]
    assert "{{ and }}" in found["braces"] and found["empty"] == "empty caption"
    assert "duplicate id" in found["good"]


def test_checked_manifests_stop_or_leave_the_bad_entries_out(tmp_path):
    from spatial_clap_sb.data.checks import checked_manifests

    path = str(bad_manifest(tmp_path))
    with pytest.raises(DataCheckError, match="7 bad"):
        checked_manifests({"train": path}, str(tmp_path), SR, "stop", str(tmp_path / "c"))
    checked = checked_manifests({"train": path}, str(tmp_path), SR, "skip",
                                str(tmp_path / "c"))
    assert checked["train"] == str(tmp_path / "c" / "train.json")
    dataset = scene_dataset(checked["train"], str(tmp_path), SR)
    assert sorted(item["id"] for item in dataset) == ["unicode"]
    assert dataset[0]["caption"] == "un café bruyant à gauche"
