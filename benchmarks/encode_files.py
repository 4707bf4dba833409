#!/usr/bin/env python3
"""Throughput and peak memory of SpatialCLAP.encode_files on this machine.

    python benchmarks/encode_files.py --model recipes/SpatialCLAP/results/spatial_clap/1234/model

Writes N stereo test files (white noise with an inter-channel delay, 44.1 kHz so that
resampling is part of the cost), embeds them and reports seconds of audio embedded per
second of wall time, and the process's peak resident memory (ru_maxrss). Files are
written a minute at a time, so that a long one (``--n_files 1 --seconds 3600``) measures
the memory of embedding it, not of making it.
"""
import argparse
import os
import resource
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

from spatial_clap_sb.inference import SpatialCLAP


def write_files(folder, n_files, seconds, sample_rate):
    rng = np.random.default_rng(0)
    paths = []
    block = 60 * sample_rate
    for i in range(n_files):
        paths.append(os.path.join(folder, f"scene_{i:03d}.wav"))
        total = int(seconds * sample_rate)
        with sf.SoundFile(paths[-1], "w", sample_rate, 2, subtype="PCM_16") as f:
            for start in range(0, total, block):
                noise = rng.standard_normal(min(block, total - start) + 8) * 0.1
                f.write(np.stack([noise[8:], noise[:-8]], axis=1).astype(np.float32))
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--n_files", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sample_rate", type=int, default=44100)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = SpatialCLAP.from_hparams(source=args.model,
                                         savedir=os.path.join(folder, "model"))
        paths = write_files(folder, args.n_files, args.seconds, args.sample_rate)
        model.encode_signals([torch.zeros(model.chunk_samples, 2)])  # warm-up
        start = time.perf_counter()
        embeddings = model.encode_files(paths, batch_size=args.batch_size)
        elapsed = time.perf_counter() - start
    audio_seconds = args.n_files * args.seconds
    print(f"threads: {torch.get_num_threads()}, files: {args.n_files} x {args.seconds} s "
          f"at {args.sample_rate} Hz, embeddings {tuple(embeddings.shape)}")
    print(f"wall: {elapsed:.2f} s, throughput: {audio_seconds / elapsed:.1f} s of audio/s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
