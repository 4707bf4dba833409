#!/usr/bin/env python3
"""Does a text tower trained on one- and two-source captions bind three-source ones?

    python benchmarks/text_binding_probe.py --data_folder data/generated --steps 300
    python benchmarks/text_binding_probe.py --data_folder data/generated \
        --manifest test_3src_heldout
    python benchmarks/text_binding_probe.py --data_folder data/generated \
        --overrides "{text_compose_clauses: False}"

Trains only the text tower of a model file, on captions alone: the recipe's text
consistency term (another phrasing of the scene must score the caption above its
permuted-assignment captions, weight 3) and its source-zone read-out (per class, which
zone; weight 3), on one- and two-source captions in the training language drawn from
the train clips in the recipe's 3:5 ratio. Then, on the stored captions of a test
manifest (default test_3src: three sources, never trained on; test_3src_heldout: the
same scenes in held-out language), it reports

* ``text``: how often another phrasing of the caption prefers it over all five
  permutations (the "text" column of ``assignment_breakdown.py``);
* ``read-out``: how often the source-zone head, reading the caption embedding, prefers
  the true class-to-zone assignment over all five permutations;
* ``cosine``: the mean cosine between a caption and its closest permutation.

No audio is involved: this measures whether the text tower's binding carries over from
two to three sources. ``--dev_language`` takes a development split out of the
*training* language (the last two training wordings of every zone, one clause form, one
joiner pair, one frame, one prompt form), trains on the rest and scores captions of the
manifest's scenes composed in that split only: a measure of generalisation to unseen
wordings that never touches the held-out test language. The model file's default tower composes clauses
(``text_compose_clauses: True``: each "sound + direction" clause embedded on its own,
then averaged); ``--overrides "{text_compose_clauses: False}"`` embeds each caption as
one sentence.
"""
import json
import time

import numpy as np
import torch
from probe_setup import load_probe, probe_arguments

from spatial_clap_sb.language import (
    ENGLISH,
    CaptionLanguage,
    Zone,
    ZoneVocabulary,
    scene_captions,
)
from spatial_clap_sb.losses import embed_negatives, scl_loss
from spatial_clap_sb.metrics import assignment_accuracy
from spatial_clap_sb.models.source_zone import SourceZoneHead

WEIGHT = 3.0  # the recipe's text_consistency_weight and source_zone_weight


def draw_sources(clips_by_label, zones, n_sources, rng):
    """Sources of a random scene: distinct classes in distinct zones."""
    labels = sorted(clips_by_label)
    picked = [labels[i] for i in rng.choice(len(labels), n_sources, replace=False)]
    sources = []
    for label, zone in zip(picked, rng.choice(zones.names, n_sources, replace=False)):
        clip = clips_by_label[label][int(rng.integers(len(clips_by_label[label])))]
        sources.append(dict(caption=clip.captions[int(rng.integers(len(clip.captions)))],
                            label=label, zone=str(zone)))
    return sources


def dev_split(zones):
    """The training language less a development part, and that part as "heldout"."""
    train = ENGLISH["train"]
    language = {
        "train": CaptionLanguage(train.clause_forms[:-1], train.joiners[:-1],
                                 train.frames[:-1], train.prompt_forms[:-1]),
        "heldout": CaptionLanguage(train.clause_forms[-1:], train.joiners[-1:],
                                   train.frames[-1:], train.prompt_forms[-1:])}
    vocabulary = ZoneVocabulary([Zone(z.name, z.low, z.high, z.phrases[:-2],
                                      z.phrases[-2:], z.direction_words)
                                 for z in zones.zones])
    return vocabulary, language


def caption_batch(scenes, zones, rng, language=None):
    """Training caption, another phrasing and permuted captions of each scene."""
    captions, paraphrases, negatives = [], [], []
    for sources in scenes:
        drawn, permuted = scene_captions(sources, rng, zones, "train", count=2,
                                         language=language)
        captions.append(drawn[0])
        paraphrases.append(drawn[1])
        negatives.append(permuted[0])
    return captions, paraphrases, negatives


def train(tower, params, head, clips_by_label, zones, args, rng, language=None):
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    scale, start = 1 / 0.07, time.time()
    one_source = 3 * args.batch_size // 8
    for step in range(args.steps):
        scenes = [draw_sources(clips_by_label, zones, 1 if i < one_source else 2, rng)
                  for i in range(args.batch_size)]
        captions, paraphrases, negatives = caption_batch(scenes, zones, rng, language)
        text, anchors = tower(captions), tower(paraphrases)
        negative_emb, mask = embed_negatives(tower, negatives, text)
        loss = WEIGHT * scl_loss(anchors, text, negative_emb, mask, scale) \
            + WEIGHT * head(text, *head.targets(scenes))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f} "
                  f"({(time.time() - start) / (step + 1):.2f} s/step)", flush=True)


def evaluate(tower, head, manifest, limit):
    """Text-side and read-out assignment on a manifest's captions, and their cosine."""
    entries = list(manifest.values())[:limit]
    true_text, permuted_text, true_head, permuted_head, closest = [], [], [], [], []
    with torch.no_grad():
        for entry in entries:
            sources = entry["sources"]
            emb = tower(entry["captions"][:2] + entry["permuted_captions"][0])
            scores = emb[1] @ emb[[0] + list(range(2, len(emb)))].T
            true_text.append(scores[0].item())
            permuted_text.append(scores[1:].numpy())
            closest.append((emb[0] @ emb[2:].T).max().item())
            true, permuted_scores = head.assignment_scores(emb[:1], [sources])
            true_head.append(true[0])
            permuted_head.append(permuted_scores[0])
    return (assignment_accuracy(np.array(true_text), np.array(permuted_text)),
            assignment_accuracy(np.array(true_head), np.array(permuted_head)),
            float(np.mean(closest)))


def main():
    parser = probe_arguments(__doc__.splitlines()[0], steps=300, n_test=300)
    parser.add_argument("--manifest", default="test_3src", help="stored test manifest")
    parser.add_argument("--dev_language", action="store_true",
                        help="score captions in a development split of the training "
                             "language (never trained on in this probe)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    model, zones, _, clips_by_label = load_probe(args)
    tower = model["text_tower"]
    head = SourceZoneHead(clips_by_label, zones.names, model["embedding_dim"])
    params = [p for p in list(tower.parameters()) + list(head.parameters())
              if p.requires_grad]
    language = None
    if args.dev_language:
        zones, language = dev_split(zones)
    train(tower, params, head, clips_by_label, zones, args, rng, language)
    tower.eval()
    with open(f"{args.data_folder}/manifests/{args.manifest}.json", encoding="utf-8") as f:
        manifest = json.load(f)
    if args.dev_language:  # the manifest's scenes, described in the development split
        for number, entry in enumerate(manifest.values()):
            entry["captions"], entry["permuted_captions"] = scene_captions(
                entry["sources"], np.random.default_rng([args.seed, number]), zones,
                "heldout", count=2, language=language)
    text, readout, cosine = evaluate(tower, head, manifest, args.n_test)
    split = " in the development language" if args.dev_language else ""
    print(f"{args.manifest} captions{split} (overrides {args.overrides}): text {text:.3f}, "
          f"read-out {readout:.3f}, caption . closest permutation {cosine:.3f}")


if __name__ == "__main__":
    main()
