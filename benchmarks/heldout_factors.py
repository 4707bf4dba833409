#!/usr/bin/env python3
"""Which part of the held-out language costs what: one part swapped at a time.

    python benchmarks/heldout_factors.py --model results/spatial_clap/1234/model \
        --data_folder data/generated

The stored ``test_2src`` and ``test_3src`` scenes (or those of ``--tests``; of the
``valid`` set, its two-source scenes) are described anew, one caption per scene
(seeded), in the training language, in the held-out language, and in the training
language with one of its parts (direction wordings, clause forms, joiners, frames)
replaced by the held-out part of the same kind. For each, with an exported
model: assignment accuracy (the recipe's metric, against the caption's own permuted
captions) and text-to-audio R@1 among the set's scenes. The gap a part opens alone
says how much of the held-out loss it accounts for.

Then each held-out direction wording on its own: a held-out prompt with the wording
("something can be heard at the far left") against the stored ``test_1src`` scenes,
its mean similarity to the scenes of each zone, and the zone it scores highest.
"""
import argparse
import dataclasses
import json
import os
import tempfile

import numpy as np

from spatial_clap_sb.inference import SpatialCLAP
from spatial_clap_sb.language import ENGLISH, scene_captions
from spatial_clap_sb.metrics import assignment_accuracy_from_embeddings

PARTS = ("clause_forms", "joiners", "frames")


def variants():
    """``{name: (language dict, split)}``: the languages the scenes are described in."""
    train, heldout = ENGLISH["train"], ENGLISH["heldout"]
    languages = {"training language": ({"train": train}, "train"),
                 "held-out language": ({"heldout": heldout}, "heldout"),
                 # The held-out split of the zones' wordings, everything else training.
                 "held-out wordings only": ({"heldout": train}, "heldout")}
    for part in PARTS:
        swapped = dataclasses.replace(train, **{part: getattr(heldout, part)})
        languages[f"held-out {part.replace('_', ' ')} only"] = ({"train": swapped}, "train")
    return languages


def scores(model, audio, entries, language, split, seed):
    """Assignment accuracy and t2a R@1 of one caption per scene in ``language``."""
    rng = np.random.default_rng(seed)
    captions, permuted = [], []
    for entry in entries:
        caption, negatives = scene_captions(entry["sources"], rng, model.zones,
                                            split=split, count=1, language=language)
        captions.append(caption[0])
        permuted.append(negatives[0])
    caption_emb = model.encode_text(captions).numpy()
    n_negatives = len(permuted[0])
    permuted_emb = model.encode_text([n for row in permuted for n in row]).numpy()
    permuted_emb = permuted_emb.reshape(len(captions), n_negatives, -1)
    assignment = assignment_accuracy_from_embeddings(audio, caption_emb, permuted_emb)
    top = (caption_emb @ audio.T).argmax(axis=1)
    return assignment, float(np.mean(top == np.arange(len(captions))))


def wording_readings(model, audio, scene_zones, split="heldout"):
    """Rows ``(zone, wording, mean similarity to each zone's scenes)`` of a split.

    Arguments
    ---------
    model : SpatialCLAP
    audio : np.ndarray
        ``[scenes, dim]`` embeddings of one-source scenes.
    scene_zones : np.ndarray
        ``[scenes]`` zone index of each scene's source.
    split : str
        ``"heldout"`` or ``"train"``: whose wordings and first prompt form.
    """
    form = ENGLISH[split].prompt_forms[0]
    rows = [(zone.name, wording) for zone in model.zones.zones
            for wording in zone.wordings(split)]
    prompts = model.encode_text([form.format(direction=w) for _, w in rows]).numpy()
    similarity = prompts @ audio.T
    per_zone = np.stack([similarity[:, scene_zones == k].mean(axis=1)
                         for k in range(len(model.zones.zones))], axis=1)
    return [(zone, wording, means) for (zone, wording), means in zip(rows, per_zone)]


def print_wording_readings(model, data_folder):
    """Prints :func:`wording_readings` of the held-out wordings on ``test_1src``."""
    entries = _entries(data_folder, "test_1src")
    audio = model.encode_files(_wavs(entries, data_folder), batch_size=32).numpy()
    names = model.zones.names
    scene_zones = np.array([names.index(e["sources"][0]["zone"]) for e in entries])
    print(f"\n| zone | held-out wording | {' | '.join(names)} | read as |")
    print("|---|---|" + "---|" * len(names) + "---|")
    own = 0
    for zone, wording, means in wording_readings(model, audio, scene_zones):
        read = names[int(means.argmax())]
        own += read == zone
        cells = " | ".join(f"{m:+.2f}" for m in means)
        print(f"| {zone} | {wording} | {cells} | {read} |")
    print(f"\nheld-out wordings read as their own zone: {own}")


def _entries(data_folder, test):
    with open(os.path.join(data_folder, "manifests", f"{test}.json"), encoding="utf-8") as f:
        return list(json.load(f).values())


def _wavs(entries, data_folder):
    return [e["wav"].replace("{data_root}", data_folder) for e in entries]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--data_folder", required=True, help="a prepared data folder")
    parser.add_argument("--tests", nargs="+", default=["test_2src", "test_3src"],
                        help="stored manifests (valid: its two-source scenes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = SpatialCLAP.from_hparams(source=args.model,
                                     savedir=os.path.join(tempfile.mkdtemp(), "model"))
    print("| test set | captions | assignment | t2a R@1 |\n|---|---|---|---|")
    for test in args.tests:
        # Scenes of two sources or more: a one-source scene has no permuted captions.
        entries = [e for e in _entries(args.data_folder, test) if len(e["sources"]) > 1]
        audio = model.encode_files(_wavs(entries, args.data_folder), batch_size=32).numpy()
        for name, (language, split) in variants().items():
            assignment, r1 = scores(model, audio, entries, language, split, args.seed)
            print(f"| {test} | {name} | {assignment:.3f} | {r1:.3f} |", flush=True)
    print_wording_readings(model, args.data_folder)


if __name__ == "__main__":
    main()
