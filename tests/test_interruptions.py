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
    for content in manifests(folder).values():
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


# ----------------------------------------------------------------------- training

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "SpatialCLAP")
TRAIN_KILLS = 3
TINY_TRAINING = [
    "--n_clips_per_class=3",
    "--scene_counts={train: {1: 12, 2: 12}, valid: {1: 6, 2: 6}, test_1src: {1: 6}, "
    "test_2src: {2: 6}, test_3src: {3: 4}}",
    "--train_scene_counts={1: 24, 2: 24}",
    "--spatialiser={sample_rate: 16000, n_rooms: 1, positions_per_zone: 2, max_order: 2}",
    "--batch_size=8", "--warmup_steps=2", "--number_of_epochs=3",
    "--ckpt_interval_minutes=0", "--ckpt_interval_steps=2",
    "--text_cache_size=0",  # MiniLM states then do not depend on earlier batches
]


def training(tmp_path, name, data_folder):
    command = [sys.executable, "train.py", "hparams/spatial_clap.yaml",
               f"--data_folder={data_folder}", f"--output_folder={tmp_path / name}",
               *TINY_TRAINING]
    return subprocess.Popen(command, cwd=RECIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"))


def finish(process):
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-3000:]
    return err


def exported(folder):
    import torch

    return {name: torch.load(folder / "model" / f"{name}.ckpt", weights_only=True)
            for name in ("audio_encoder", "text_tower", "temperature")}


def wait_for_new_checkpoint(save_folder, since, process, timeout=300):
    """Waits until a checkpoint newer than ``since`` is complete (its CKPT.yaml)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        done = [p for p in save_folder.glob("CKPT*/CKPT.yaml")
                if p.stat().st_mtime > since]
        if done:
            return True
        time.sleep(0.05)
    return False


def test_kill_9_during_training_then_rerun_ends_bitwise_equal(tmp_path):
    """Killed at random moments after a checkpoint (training steps, validation,
    checkpoint writes), the same command resumes from the last checkpoint, loses at
    most the steps since it, and ends with the weights and test metrics of the
    uninterrupted run: mixing, captions, prompts, dropout, optimizer, schedule,
    temperature and epoch all resume."""
    import torch

    data = tmp_path / "data"
    finish(training(tmp_path, "reference", data))
    rng = np.random.default_rng(1)
    save = tmp_path / "interrupted" / "save"
    last_complete = []
    for _ in range(TRAIN_KILLS):
        began = time.time()
        process = training(tmp_path, "interrupted", data)
        assert wait_for_new_checkpoint(save, began, process)
        time.sleep(rng.uniform(0.0, 2.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        # The marker's own time: a folder's time also changes when an older
        # checkpoint's files are deleted after a newer one is saved.
        markers = list(save.glob("CKPT*/COMPLETE"))
        last_complete.append(max(markers, key=lambda p: p.stat().st_mtime).parent.name)
    finish(training(tmp_path, "interrupted", data))
    log = (tmp_path / "interrupted" / "log.txt").read_text()
    loaded = [line.rsplit("/", 1)[-1].strip() for line in log.splitlines()
              if "Loading a checkpoint from" in line]
    # Each restart resumed from the newest checkpoint complete when it was killed.
    assert loaded[:TRAIN_KILLS] == last_complete
    reference, interrupted = exported(tmp_path / "reference"), \
        exported(tmp_path / "interrupted")
    for name, weights in reference.items():
        for key, value in weights.items():
            assert torch.equal(value, interrupted[name][key]), (name, key)
    assert (tmp_path / "reference" / "test_metrics.json").read_text() == \
        (tmp_path / "interrupted" / "test_metrics.json").read_text()


def test_a_half_written_checkpoint_is_never_loaded(tmp_path):
    """A checkpoint killed mid-write (its CKPT.yaml written, a weight file cut short)
    is skipped by recovery, which loads the previous one, and removed at the next save."""
    import shutil

    import torch

    from spatial_clap_sb.brain import CompleteCheckpointer

    layer = torch.nn.Linear(4, 4)
    checkpointer = CompleteCheckpointer(tmp_path / "save", {"layer": layer})
    good = checkpointer.save_checkpoint(meta={"step": 1})
    saved_weight = layer.weight.detach().clone()
    half = tmp_path / "save" / "CKPT+9999-12-31+23-59-59+00"  # the newest by name
    shutil.copytree(good.path, half)
    (half / "COMPLETE").unlink()
    (half / "layer.ckpt").write_bytes((half / "layer.ckpt").read_bytes()[:40])
    with torch.no_grad():
        layer.weight.zero_()
    recovered = checkpointer.recover_if_possible()
    assert recovered.path == good.path
    assert torch.equal(layer.weight, saved_weight)
    checkpointer.save_and_keep_only(meta={"step": 2}, num_to_keep=1)
    assert not half.exists()
    assert len(checkpointer.list_checkpoints()) == 1
