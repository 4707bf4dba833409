#!/usr/bin/env python3
"""The caption language in numbers: how much text training reads, and how well the
clause finder splits captions it was not written for.

    python benchmarks/caption_language.py --epochs 10

Draws the captions of the recipe's training schedule as the on-the-fly mixer does
(2500 one-source + 5000 two-source scenes per epoch over the built-in classes, a caption
and a second one per scene plus the caption's permuted negatives) and counts the
distinct captions, clauses and pieces (the texts the frozen MiniLM reads, lower-cased;
with sound and direction read apart, as the default text tower reads them, with the
training fillers glued to them at ``--filler_prob``, and whole).
Then composes 2- and 3-source captions in the template, training and held-out language
and reports how often :func:`~spatial_clap_sb.language.caption_clauses` returns
exactly one clause per source, each holding that source's sound with its own direction
(:func:`~spatial_clap_sb.language.source_clause`): a sound read with a neighbour's
direction is a miss. The captions' permuted negatives are scored too.
"""
import argparse
import dataclasses

import numpy as np

from spatial_clap_sb.data.synthesis import GENERATED_CLASSES
from spatial_clap_sb.language import (
    N_PHRASINGS,
    ZoneVocabulary,
    caption_clause_pieces,
    caption_clauses,
    compose,
    draw_style,
    permuted_assignments,
    scene_captions,
    source_clause,
    template_style,
    training_pieces,
)


def draw_sources(rng, zones, n_sources):
    sounds = list(GENERATED_CLASSES.values())
    picked = rng.choice(len(sounds), n_sources, replace=False)
    return [{"caption": sounds[i][int(rng.integers(len(sounds[i])))],
             "zone": zones.names[z]}
            for i, z in zip(picked, rng.choice(len(zones), n_sources, replace=False))]


def training_text(zones, epochs, counts, rng, filler_prob):
    """Distinct captions and clauses of a simulated training schedule, and the distinct
    pieces the text encoder reads: with sound and direction read apart (split_roles,
    the default), the same with fillers glued at ``filler_prob``, and with the pieces
    between cuts read whole."""
    captions, clauses, pieces, glued, whole_pieces = set(), set(), set(), set(), set()
    for _ in range(epochs):
        for n_sources, count in counts.items():
            for _ in range(count):
                drawn, permuted = scene_captions(draw_sources(rng, zones, n_sources),
                                                 rng, zones, "train", count=2)
                for caption in drawn + permuted[0]:
                    captions.add(caption)
                    clauses.update(c.lower() for c in caption_clauses(caption, zones))
                    split = caption_clause_pieces(caption, zones, split_roles=True)
                    for clause in split:
                        pieces.update(p.lower() for p in clause)
                    for clause in training_pieces(split, caption, filler_prob=filler_prob):
                        glued.update(p.lower() for p in clause)
                    for clause in caption_clause_pieces(caption, zones):
                        whole_pieces.update(p.lower() for p in clause)
    return len(captions), len(clauses), len(pieces), len(glued), len(whole_pieces)


def clause_accuracy(zones, split, n_scenes, rng):
    """Share of captions (and their negatives) split into one clause per source, each
    with its source's sound and direction."""
    found = total = 0
    for scene in range(n_scenes):
        sources = draw_sources(rng, zones, 2 + scene % 2)
        style = (template_style(scene % N_PHRASINGS, zones) if split == "template"
                 else draw_style(rng, zones, split))
        style = dataclasses.replace(style, order="as_given")
        for mentioned in [sources] + permuted_assignments(sources):
            clauses = [c.lower() for c in caption_clauses(compose(mentioned, style, zones),
                                                           zones)]
            total += 1
            found += len(clauses) == len(mentioned) and all(
                sum(s["caption"] in clause for clause in clauses) == 1
                and any(s["caption"] in clause
                        and source_clause(s, style, zones).lower() in clause
                        for clause in clauses)
                for s in mentioned)
    return found / total, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--one_source", type=int, default=2500)
    parser.add_argument("--two_source", type=int, default=5000)
    parser.add_argument("--n_scenes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--filler_prob", type=float, default=0.3,
                        help="the recipe's text_filler_prob")
    args = parser.parse_args()
    zones = ZoneVocabulary.default()
    rng = np.random.default_rng(args.seed)
    n_captions, n_clauses, n_pieces, n_glued, n_whole = training_text(
        zones, args.epochs, {1: args.one_source, 2: args.two_source}, rng,
        args.filler_prob)
    print(f"training, {args.epochs} epochs: {n_captions} distinct captions, "
          f"{n_clauses} distinct clauses; the text encoder reads {n_pieces} distinct "
          f"pieces with sound and direction apart, {n_glued} with fillers glued at "
          f"{args.filler_prob:g} ({n_whole} with pieces read whole)")
    for split in ("template", "train", "heldout"):
        accuracy, total = clause_accuracy(zones, split, args.n_scenes, rng)
        print(f"clause finder, {split} language: {accuracy:.4f} of {total} captions")


if __name__ == "__main__":
    main()
