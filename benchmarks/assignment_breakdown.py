#!/usr/bin/env python3
"""Where content-space assignment fails: by zone distance, audio side against text side.

    python benchmarks/assignment_breakdown.py --model results/spatial_clap/1234/model \
        --data_folder data/generated

For each multi-source test set (``test_2src``, ``test_3src``), with an exported model:

- ``audio``: the assignment accuracy of ``test_metrics.json`` (the audio embedding scores
  the scene's caption above every permuted-assignment caption);
- ``text``: the same test with the audio replaced by another phrasing of the scene's
  caption, i.e. whether the text tower itself keeps a scene apart from its permutations;
- ``caption.permuted``: the mean cosine between a caption and its closest permutation
  (near 1: the text side barely tells them apart, so the audio must be very precise).

Scenes are grouped by the smallest zone distance between two of their sources
(1 = adjacent zones such as left / front-left).
"""
import argparse
import json
import os
import tempfile

import numpy as np

from spatial_clap_sb.data.captions import compose_caption, permuted_captions
from spatial_clap_sb.inference import SpatialCLAP


def smallest_zone_distance(sources, zone_names):
    """Smallest distance, in zones, between two of a scene's sources."""
    return int(min(np.diff(sorted(zone_names.index(s["zone"]) for s in sources))))


def breakdown(model, entries, data_folder, zones):
    """Per scene: audio correct, text correct, closest-permutation cosine, zone distance."""
    zone_names = [zone["name"] for zone in zones]
    paths = [entry["wav"].replace("{data_root}", data_folder) for entry in entries]
    audio = model.encode_files(paths, batch_size=32)
    rows = []
    for embedding, entry in zip(audio, entries):
        sources = entry["sources"]
        captions = model.encode_text([compose_caption(sources, 0, zones)]
                                     + permuted_captions(sources, 0, zones))
        paraphrase = model.encode_text([compose_caption(sources, 1, zones)])[0]
        true, permuted = captions[0], captions[1:]
        rows.append((bool(true @ embedding > (permuted @ embedding).max()),
                     bool(true @ paraphrase > (permuted @ paraphrase).max()),
                     float((permuted @ true).max()),
                     smallest_zone_distance(sources, zone_names)))
    return rows


def report(name, rows):
    audio, text, cosine, distance = map(np.array, zip(*rows))
    print(f"{name} ({len(rows)} scenes): audio {audio.mean():.3f}, text {text.mean():.3f}, "
          f"caption.permuted {cosine.mean():.3f}")
    for d in sorted(set(distance)):
        chosen = distance == d
        print(f"  zones apart {d}: {int(chosen.sum())} scenes, audio "
              f"{audio[chosen].mean():.3f}, text {text[chosen].mean():.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--data_folder", required=True, help="a prepared data folder")
    parser.add_argument("--tests", nargs="+", default=["test_2src", "test_3src"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = SpatialCLAP.from_hparams(source=args.model,
                                         savedir=os.path.join(folder, "model"))
        zones = model.hparams.zones
        for name in args.tests:
            manifest = os.path.join(args.data_folder, "manifests", f"{name}.json")
            with open(manifest, encoding="utf-8") as f:
                entries = list(json.load(f).values())
            report(name, breakdown(model, entries, args.data_folder, zones))


if __name__ == "__main__":
    main()
