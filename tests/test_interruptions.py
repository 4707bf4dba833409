"""kill -9 at any moment leaves nothing half-done: an interrupted prepare, rerun, ends
identical to an uninterrupted one, and no manifest ever names a missing or cut file."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from spatial_clap_sb.data.prepare import DATA_ROOT

PREPARE = """
import sys, time
from spatial_clap_sb.data.prepare import prepare_spatial_scenes
print("imported", flush=True)
prepare_spatial_scenes(
    sys.argv[1], n_clips_per_class=3,
    scene_counts={"train": {1: 60, 2: 60}, "valid": {1: 10, 2: 10},
                  "test_1src": {1: 20}, "test_2src": {2: 20}, "test_3src": {3: 20}},
    spatialiser=dict(n_rooms=3, positions_per_zone=2, max_order=4),
    mixer=dict(scene_duration=1.0), seed=5)
print("done", flush=True)
"""
KILL_POINTS = 8


def start(folder):
    process = subprocess.Popen([sys.executable, "-c", PREPARE, str(folder)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert process.stdout.readline().strip() == "imported"
    return process


def run_to_end(folder):
    process = start(folder)
    began = time.monotonic()
    assert process.stdout.readline().strip() == "done"
    assert process.wait(timeout=300) == 0
    return time.monotonic() - began


def manifests(folder):
    out = {}
    for name in sorted(os.listdir(folder / "manifests")):
        if name.endswith(".json"):
            out[name] = (folder / "manifests" / name).read_bytes()
    return out


def assert_manifests_name_whole_files(folder):
    """Every scene a manifest present on disk names is a complete file."""
    for name, content in manifests(folder).items():
        for entry in json.loads(content).values():
            path = entry["wav"].replace(DATA_ROOT, str(folder))
            info = sf.info(path)
            assert info.frames == int(round(entry["duration"] * info.samplerate)), path


def test_kill_9_during_prepare_then_rerun_ends_identical(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    duration = run_to_end(reference)
    rng = np.random.default_rng(0)
    kill_times = np.sort(rng.uniform(0.0, duration, KILL_POINTS))
    for delay in kill_times:
        process = start(interrupted)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if (interrupted / "manifests").exists():
            assert_manifests_name_whole_files(interrupted)
    run_to_end(interrupted)

    assert manifests(interrupted) == manifests(reference)  # byte for byte
    for name in manifests(reference):
        entries = json.loads((reference / "manifests" / name).read_bytes())
        for entry in entries.values():
            rel = entry["wav"].replace(DATA_ROOT + "/", "")
            assert (interrupted / rel).read_bytes() == (reference / rel).read_bytes()
    for bank in sorted(os.listdir(reference / "rir_banks")):
        with np.load(reference / "rir_banks" / bank) as a, \
                np.load(interrupted / "rir_banks" / bank) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (bank, key)
    leftovers = [os.path.join(root, f) for root, _, files in os.walk(interrupted)
                 for f in files if ".tmp" in f]
    assert leftovers == []
