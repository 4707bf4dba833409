#!/usr/bin/env python3
"""Where content-space assignment fails: by zone distance, audio side against text side.

    python benchmarks/assignment_breakdown.py --model results/spatial_clap/1234/model \
        --data_folder data/generated

For each multi-source test set (``test_2src``, ``test_3src`` and their held-out-language
twins where the data folder has them), with an exported model:

- ``audio``: the assignment accuracy of ``test_metrics.json`` (the audio embedding scores
  the scene's caption above every permuted-assignment caption);
- ``text``: the same test with the audio replaced by another phrasing of the scene's
  caption, i.e. whether the text tower itself keeps a scene apart from its permutations;
- ``caption.permuted``: the mean cosine between a caption and its closest permutation
  (near 1: the text side barely tells them apart, so the audio must be very precise).

Scenes are grouped by the smallest zone distance between two of their sources
(1 = adjacent zones such as left / front-left). Both accuracies are
:func:`~spatial_clap_sb.metrics.assignment_accuracy_from_embeddings`, the metric of the
recipe.
"""
import argparse
import json
import os
import tempfile

import numpy as np

from spatial_clap_sb.inference import SpatialCLAP
from spatial_clap_sb.metrics import assignment_accuracy_from_embeddings


def embed_test_set(model, entries, data_folder):
    """Audio, caption (the first), paraphrase (the second) and permuted-caption
    embeddings of a test set whose scenes all have the same number of sources."""
    zones = model.zones
    paths = [entry["wav"].replace("{data_root}", data_folder) for entry in entries]
    sources = [entry["sources"] for entry in entries]
    permuted = [entry["permuted_captions"][0] for entry in entries]
    if len({len(p) for p in permuted}) != 1:
        raise ValueError("Every scene of a test set needs the same number of sources.")
    flat = [caption for captions in permuted for caption in captions]
    return dict(
        audio=model.encode_files(paths, batch_size=32).numpy(),
        caption=model.encode_text([e["captions"][0] for e in entries]).numpy(),
        paraphrase=model.encode_text([e["captions"][1] for e in entries]).numpy(),
        permuted=model.encode_text(flat).numpy().reshape(len(sources), len(permuted[0]),
                                                         -1),
        gap=np.array([zones.smallest_gap([x["zone"] for x in s]) for s in sources]))


def report(name, emb):
    closest = np.einsum("nd,npd->np", emb["caption"], emb["permuted"]).max(1)
    groups = [("all", np.ones(len(emb["gap"]), bool))]
    groups += [(f"zones apart {g}", emb["gap"] == g) for g in sorted(set(emb["gap"]))]
    print(f"{name}: caption.permuted {closest.mean():.3f}")
    for label, rows in groups:
        audio, text = (assignment_accuracy_from_embeddings(
            emb[anchor][rows], emb["caption"][rows], emb["permuted"][rows])
            for anchor in ("audio", "paraphrase"))
        print(f"  {label}: {int(rows.sum())} scenes, audio {audio:.3f}, text {text:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--data_folder", required=True, help="a prepared data folder")
    parser.add_argument("--tests", nargs="+", default=["test_2src", "test_3src",
                                                       "test_2src_heldout",
                                                       "test_3src_heldout"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = SpatialCLAP.from_hparams(source=args.model,
                                         savedir=os.path.join(folder, "model"))
        for name in args.tests:
            manifest = os.path.join(args.data_folder, "manifests", f"{name}.json")
            with open(manifest, encoding="utf-8") as f:
                entries = list(json.load(f).values())
            report(name, embed_test_set(model, entries, args.data_folder))


if __name__ == "__main__":
    main()
