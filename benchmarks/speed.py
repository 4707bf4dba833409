#!/usr/bin/env python3
"""Speed and memory of Spatial-CLAP on this machine, side by side with a peer.

    python benchmarks/speed.py --model recipes/SpatialCLAP/results/spatial_clap/1234/model \
        --data_folder recipes/SpatialCLAP/data/generated
    python benchmarks/speed.py --model ... --long_file 3600   # one 60-min file, alone

Everything runs in one process, in interleaved rounds (each case once per round, the
table gives the median over rounds), so that the machine's state weighs on every case
alike. Cases:

- **audio, memory**: ``encode_signals`` on 10-s stereo clips at 16 kHz already in
  memory (the model alone), in fp32 and with ``audio_precision="bf16"``;
- **audio, files**: ``encode_files`` on the same audio written as 16 kHz WAV, 44.1 kHz
  WAV, 48 kHz WAV and 44.1 kHz FLAC (reading and resampling included);
- **audio, ONNX Runtime**: the audio tower exported by ``spatial-clap export-onnx``
  (when ``onnxruntime`` is installed), same in-memory clips;
- **peer**: the transformers CLAP audio tower (``ClapAudioModelWithProjection``, its
  default HTS-AT configuration, the LAION-CLAP architecture, random weights: speed does
  not depend on them) with its own feature extractor, on 10-s mono clips at 48 kHz;
- **pretrained content encoder** (with ``--pretrained_content``): what caching the
  features of a frozen AST-base (``ASTConfig()``, the size of
  MIT/ast-finetuned-audioset-10-10-0.4593, random weights) costs per 10-s scene, the
  one-off pass of ``hparams/spatial_clap_pretrained.yaml`` and ``audiocaps_gpu.yaml``;
- **text queries**: ``encode_text`` on held-out-language scene captions, with an empty
  cache of MiniLM states (cold) and again (cached);
- **training** (with ``--data_folder``): the recipe's training step on a batch mixed on
  the fly, broken down into data (mixing), features, audio forward + backward, text
  tower and the rest of the objective, and the whole step; scenes per second of
  on-the-fly mixing against those a step consumes, and of rendering stored scenes.

Throughputs are seconds of audio per second of wall time (s/s), captions per second or
scenes per second; the peak resident memory of the process is printed at the end.

``--long_file SECONDS`` runs one case alone instead, so that the peak memory is its own:
one stereo 44.1 kHz file of that length (written 10 s at a time) through
``encode_files``, with the resident memory before any audio and at the peak.
"""
import argparse
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from spatial_clap_sb.inference import SpatialCLAP
from spatial_clap_sb.language import scene_captions
from spatial_clap_sb.models.features import mid_signal

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "SpatialCLAP"
SOUNDS = ["a dog barks", "rain falls on a tin roof", "a bell rings", "a car passes",
          "a baby cries", "birds chirp", "a door slams", "a phone rings"]


# ---------------------------------------------------------------------------- audio


def stereo_clips(n_clips, seconds, sample_rate, seed=0):
    """Noise clips with an inter-channel delay (a source off to one side)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    clips = []
    for _ in range(n_clips):
        noise = rng.standard_normal(n + 8).astype(np.float32) * 0.1
        clips.append(np.stack([noise[8:], noise[:-8]], axis=1))
    return clips


def write_clips(folder, clips, sample_rate, fmt):
    """Writes clips as 16-bit files of the given format; returns their paths."""
    paths = []
    for i, clip in enumerate(clips):
        path = os.path.join(folder, f"clip_{i:03d}.{fmt}")
        sf.write(path, clip, sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def audio_cases(model, folder, n_clips, seconds, batch_size):
    """``{name: (function, seconds of audio)}`` for the audio embedding cases."""
    audio = n_clips * seconds
    in_memory = [torch.from_numpy(c) for c in stereo_clips(n_clips, seconds, 16000)]
    cases = {"audio, memory (16 kHz)":
             (lambda: model.encode_signals(in_memory, batch_size=batch_size), audio)}

    def in_memory_bf16():
        model.audio_precision = "bf16"
        try:
            model.encode_signals(in_memory, batch_size=batch_size)
        finally:
            model.audio_precision = "fp32"

    cases["audio, memory, bf16 autocast (16 kHz)"] = (in_memory_bf16, audio)
    for rate, fmt in ((16000, "wav"), (44100, "wav"), (48000, "wav"), (44100, "flac")):
        sub = os.path.join(folder, f"{rate}_{fmt}")
        os.makedirs(sub)
        paths = write_clips(sub, stereo_clips(n_clips, seconds, rate), rate, fmt)
        cases[f"audio, files ({rate / 1000:g} kHz {fmt})"] = (
            lambda paths=paths: model.encode_files(paths, batch_size=batch_size), audio)
    return cases


def onnx_case(model, folder, n_clips, seconds, batch_size):
    """The audio tower under ONNX Runtime, or None when it is not installed."""
    try:
        import onnxruntime

        from spatial_clap_sb.onnx_export import export_onnx
    except ImportError as error:
        print(f"(ONNX Runtime case skipped: {error})")
        return None
    path = os.path.join(folder, "audio_tower.onnx")
    export_onnx(model, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # Idle ORT threads would otherwise spin, taking the cores from the next case.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, options,
                                           providers=["CPUExecutionProvider"])
    window = model.chunk_samples
    windows = np.concatenate(stereo_clips(n_clips, seconds, 16000))
    windows = windows[: len(windows) // window * window].reshape(-1, window, 2)

    def run():
        for start in range(0, len(windows), batch_size):
            session.run(None, {"wavs": windows[start:start + batch_size]})

    return run, n_clips * seconds


def peer_case(n_clips, seconds):
    """The transformers CLAP audio tower (HTS-AT, LAION-CLAP's architecture)."""
    from transformers import (
        ClapAudioConfig,
        ClapAudioModelWithProjection,
        ClapFeatureExtractor,
    )

    torch.manual_seed(0)
    peer = ClapAudioModelWithProjection(ClapAudioConfig()).eval()
    extractor = ClapFeatureExtractor()
    clips = [c[:, 0] for c in stereo_clips(n_clips, seconds, extractor.sampling_rate)]

    def run():
        with torch.inference_mode():
            for start in range(0, len(clips), 8):
                features = extractor(clips[start:start + 8], return_tensors="pt",
                                     sampling_rate=extractor.sampling_rate,
                                     truncation="rand_trunc")  # no fusion: 10-s clips
                peer(input_features=features["input_features"])

    return run, n_clips * seconds


def pretrained_content_case(n_clips, seconds, batch_size):
    """A frozen AST-base on mid signals, as the feature cache runs it (time frames)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    from spatial_clap_sb.models.pretrained_audio import PretrainedAudioEncoder

    folder = tempfile.mkdtemp()
    torch.manual_seed(0)
    ASTModel(ASTConfig()).save_pretrained(folder)
    ASTFeatureExtractor().save_pretrained(folder)
    encoder = PretrainedAudioEncoder(folder, sample_rate=16000, frame_mode="time")
    mids = torch.from_numpy(np.stack([c.mean(1) for c in
                                      stereo_clips(n_clips, seconds, 16000)]))

    def run():
        with torch.inference_mode():
            for start in range(0, n_clips, batch_size):
                encoder(mids[start:start + batch_size])

    return run, n_clips * seconds


# ---------------------------------------------------------------------------- text


def heldout_captions(zones, n_captions, seed=0):
    """Two- and three-source scene captions in the held-out language."""
    rng = np.random.default_rng(seed)
    captions = []
    while len(captions) < n_captions:
        n_sources = int(rng.integers(2, 4))
        picked = rng.choice(len(SOUNDS), n_sources, replace=False)
        placed = rng.choice(len(zones), n_sources, replace=False)
        sources = [{"caption": SOUNDS[s], "zone": zones.zones[z].name}
                   for s, z in zip(picked, placed)]
        captions.extend(scene_captions(sources, rng, zones, "heldout")[0])
    return captions[:n_captions]


def text_cases(model, n_captions):
    """Cold (empty MiniLM cache) and cached query throughput."""
    captions = heldout_captions(model.zones, n_captions)
    encoder = model.mods.text_tower.text_encoder

    def cold():
        if hasattr(encoder, "_cache"):
            encoder._cache.clear()
        model.encode_text(captions)

    return {"text queries, cold cache": (cold, len(captions)),
            "text queries, cached": (lambda: model.encode_text(captions), len(captions))}


# ---------------------------------------------------------------------------- training


class TrainingStep:
    """The recipe's training step on batches mixed on the fly, timed by part."""

    def __init__(self, data_folder, batch_size):
        sys.path.insert(0, str(RECIPE))
        import speechbrain as sb
        import train as recipe
        from hyperpyyaml import load_hyperpyyaml

        overrides = {"data_folder": data_folder, "batch_size": batch_size,
                     "output_folder": tempfile.mkdtemp()}
        with open(RECIPE / "hparams" / "spatial_clap.yaml", encoding="utf-8") as f:
            self.hparams = load_hyperpyyaml(f, overrides)
        manifests = recipe.prepare_manifests(self.hparams)
        train_set, _, _, labels = recipe.dataio_prepare(self.hparams, manifests)
        self.brain = recipe.SpatialCLAPBrain(
            modules=recipe.training_modules(self.hparams, labels),
            opt_class=self.hparams["opt_class"], hparams=self.hparams,
            run_opts={"device": "cpu"}, checkpointer=None)
        self.brain.init_optimizers()
        self.brain.on_stage_start(sb.Stage.TRAIN)
        self.brain.modules.train()
        self.loader = self.brain.make_dataloader(
            train_set, sb.Stage.TRAIN, ckpt_prefix=None,
            **self.hparams["train_dataloader_opts"])
        self.batches = iter(self.loader)
        self.sb = sb
        self.batch_size = batch_size
        self.mixer = recipe.split_mixer(data_folder, "train")
        self.step()  # warm-up

    def next_batch(self):
        """The next training batch (a new epoch's when one ends)."""
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self):
        """One full step (data, forward, objective, backward, optimizer)."""
        self.brain.fit_batch(self.next_batch())

    def data(self):
        """Mixing and collating one batch."""
        self.batch = self.next_batch()

    def features(self):
        """The stereo and mid features of the batch (no parameters)."""
        encoder = self.brain.modules.audio_encoder
        wavs = self.batch.sig.data
        with torch.no_grad(), self.brain.training_ctx:
            encoder.spatial_encoder.features(wavs)
            encoder.content_encoder.features(mid_signal(wavs))

    def audio(self):
        """Audio tower forward and backward (features included), in the step's
        precision."""
        with self.brain.training_ctx:
            embeddings = self.brain.modules.audio_encoder(*self.batch.sig)
        embeddings.float().sum().backward()

    def text(self):
        """The objective on the batch's audio embeddings, held fixed: its one text-tower
        call (captions, negatives, paraphrases, prompts), the loss terms, backward."""
        brain = self.brain
        audio = torch.nn.functional.normalize(
            torch.randn(len(self.batch.caption), brain.hparams.model["embedding_dim"]),
            dim=-1)
        with brain.training_ctx:
            terms = brain.modules.objective(audio, self.batch, brain.modules.text_tower,
                                            brain.modules.temperature(), random)
            brain.modules.objective.total(terms).backward()

    def render_stored(self):
        """Drawing and rendering scenes as the prepare step does (one pass a chunk)."""
        rng = np.random.default_rng(0)
        self.mixer.render_batch([self.mixer.draw(rng, 2) for _ in range(self.batch_size)])

    def cases(self):
        n = self.batch_size
        return {"training step (whole)": (self.step, n),
                "  data: mixing + collating a batch": (self.data, n),
                "  features (STFT, cues)": (self.features, n),
                "  audio forward + backward": (self.audio, n),
                "  text tower + loss terms + backward": (self.text, n),
                "prepare: drawing + rendering scenes": (self.render_stored, n)}


def long_file(model, folder, seconds, sample_rate=44100):
    """Wall time and peak memory of embedding one long file (streamed in windows),
    written a 10-s block at a time so that writing it adds little to the peak."""
    path = os.path.join(folder, "long.wav")
    rng = np.random.default_rng(0)
    block, total = 10 * sample_rate, int(seconds * sample_rate)  # small blocks: the
    with sf.SoundFile(path, "w", sample_rate, 2, subtype="PCM_16") as f:  # peak is
        for start in range(0, total, block):  # the embedding's, not the writing's
            noise = rng.standard_normal(min(block, total - start) + 8, np.float32) * 0.1
            f.write(np.stack([noise[8:], noise[:-8]], axis=1))
    before = peak_rss_mib()
    start = time.perf_counter()
    model.encode_files([path])
    print(f"one {seconds / 60:g}-min stereo {sample_rate / 1000:g} kHz file: "
          f"{time.perf_counter() - start:.1f} s; peak resident memory {before:.0f} MiB "
          f"before any audio, {peak_rss_mib():.0f} MiB after")


# ---------------------------------------------------------------------------- main


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024



def run_rounds(cases, rounds):
    """Median wall time of each case over interleaved rounds."""
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (function, _) in cases.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def unit(name):
    if name.startswith("text"):
        return "captions/s"
    if name.startswith(("training", "  ", "prepare")):
        return "scenes/s"
    return "s audio/s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--data_folder", default=None,
                        help="prepared recipe data: adds the training cases")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n_clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--n_captions", type=int, default=600)
    parser.add_argument("--no_peer", action="store_true", help="skip the CLAP peer")
    parser.add_argument("--pretrained_content", action="store_true",
                        help="add the cost of caching a frozen AST-base's features")
    parser.add_argument("--long_file", type=float, default=None, metavar="SECONDS",
                        help="only embed one file this long and report its peak memory")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice); fewer than "
                             "the cores leaves one to read files ahead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        model = SpatialCLAP.from_hparams(source=args.model,
                                         savedir=os.path.join(folder, "model"))
        if args.long_file:
            return long_file(model, folder, args.long_file)
        cases = audio_cases(model, folder, args.n_clips, args.seconds, args.batch_size)
        onnx = onnx_case(model, folder, args.n_clips, args.seconds, args.batch_size)
        if onnx:
            cases["audio, ONNX Runtime (16 kHz)"] = onnx
        if not args.no_peer:
            cases["peer: transformers CLAP audio tower (48 kHz)"] = \
                peer_case(args.n_clips, args.seconds)
        if args.pretrained_content:
            cases["pretrained content encoder: AST-base, feature cache"] = \
                pretrained_content_case(args.n_clips, args.seconds, args.batch_size)
        cases.update(text_cases(model, args.n_captions))
        training = TrainingStep(args.data_folder, args.train_batch_size) \
            if args.data_folder else None
        if training:
            cases.update(training.cases())
        for function, _ in cases.values():  # warm-up
            function()
        medians = run_rounds(cases, args.rounds)

    print(f"\n{platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds "
          "(median)\n")
    print("| case | wall (s) | throughput |\n|---|---|---|")
    for name, (_, amount) in cases.items():
        print(f"| {name.strip()} | {medians[name]:.3f} | "
              f"{amount / medians[name]:,.0f} {unit(name)} |")
    rate = {name: cases[name][1] / medians[name] for name in cases}
    memory = rate["audio, memory (16 kHz)"]
    print("\nratios")
    for name in rate:
        if name.startswith(("audio, files", "audio, ONNX", "audio, memory, bf16")):
            print(f"  {name} / memory: {rate[name] / memory:.2f}")
    peer = "peer: transformers CLAP audio tower (48 kHz)"
    if peer in rate:
        print(f"  memory / peer: {memory / rate[peer]:.1f}x; bf16 / peer: "
              f"{rate['audio, memory, bf16 autocast (16 kHz)'] / rate[peer]:.1f}x")
    if training:
        step = medians["training step (whole)"]
        mixing = medians["  data: mixing + collating a batch"]
        print(f"  on-the-fly mixing supplies {args.train_batch_size / mixing:.0f} scenes/s; "
              f"a step consumes {args.train_batch_size / step:.0f} scenes/s "
              f"(mixing is {mixing / step:.0%} of the step)")
    print(f"\npeak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
