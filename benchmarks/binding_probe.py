#!/usr/bin/env python3
"""How well can an audio tower bind each sound to its direction? (oracle-supervised probe)

    python benchmarks/binding_probe.py --data_folder data/generated --steps 400 \
        --model_yaml hparams/spatial_clap_model.yaml

Trains only the audio encoder of a model file, with a linear head that predicts the zone
of every labelled source from the audio embedding (a SELD-style target: per class, which
zone), on one- and two-source scenes mixed on the fly from the train split. Then scores
content-space assignment on the stored test_2src and test_3src scenes: a scene counts as
correct when the head's log-probabilities of the true class-to-zone assignment beat those
of every permutation. No text tower is involved, so this separates "the audio tower can
bind" from "the contrastive objective gets it there"; accuracies are reported by the
smallest zone distance between two of the scene's sources. The data folder must hold a
labelled source library (the built-in one is).

Architecture variants are edits of a copy of the model YAML (``--model_yaml``) or
top-level overrides (``--overrides "{spatial_hidden: 96}"``).
"""
import time

import numpy as np
import speechbrain as sb
import torch
from probe_setup import load_probe, probe_arguments
from speechbrain.nnet.schedulers import WarmCoolDecayLRSchedule

from spatial_clap_sb.data.pipelines import dynamic_scene_dataset, scene_dataset
from spatial_clap_sb.metrics import assignment_accuracy
from spatial_clap_sb.models.source_zone import SourceZoneHead


def train(audio, head, loader, steps, peak_lr):
    params = list(audio.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.01)
    # The recipe's schedule: warm-up, constant, last 30% of the steps decayed to 0.
    schedule = WarmCoolDecayLRSchedule(lr=peak_lr, warmup=30, cooldown=int(0.3 * steps),
                                       total_steps=steps, decay_factor=1.0)
    audio.train()
    start, losses = time.time(), []
    for step, batch in enumerate(loader):
        if step >= steps:
            break
        schedule(optimizer, step + 1)
        loss = head(audio(batch.sig.data), *head.targets(batch.sources))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {np.mean(losses[-50:]):.3f} "
                  f"({(time.time() - start) / (step + 1):.2f} s/step)", flush=True)


def evaluate(audio, head, dataset, zones, limit):
    """Assignment accuracy overall and by the smallest zone distance of the scene."""
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=100)
    audio.eval()
    true_scores, permuted_scores, gaps = [], [], []
    with torch.no_grad():
        for batch in loader:
            true, permuted = head.assignment_scores(audio(batch.sig.data), batch.sources)
            true_scores.extend(true)
            permuted_scores.extend(permuted)
            gaps.extend(zones.smallest_gap([s["zone"] for s in sources])
                        for sources in batch.sources)
            if len(gaps) >= limit:
                break
    audio.train()
    true_scores, permuted_scores = np.array(true_scores), np.array(permuted_scores)
    gaps = np.array(gaps)
    by_gap = {int(g): round(assignment_accuracy(true_scores[gaps == g],
                                                permuted_scores[gaps == g]), 3)
              for g in sorted(set(gaps))}
    return assignment_accuracy(true_scores, permuted_scores), by_gap


def main():
    args = probe_arguments(__doc__.splitlines()[0], steps=400, n_test=600).parse_args()
    model, zones, mixer, clips_by_label = load_probe(args)
    audio = model["audio_encoder"]
    head = SourceZoneHead(clips_by_label, zones.names, model["embedding_dim"])
    n_scenes = args.steps * args.batch_size  # one pass, 3:5 one- to two-source scenes
    one_source = 3 * n_scenes // 8           # (the recipe's ratio)
    scenes = dynamic_scene_dataset(mixer, {1: one_source, 2: n_scenes - one_source},
                                   seed=args.seed, zones=model["zones"])
    loader = sb.dataio.dataloader.make_dataloader(scenes, batch_size=args.batch_size,
                                                  shuffle=True, collate_fn=scenes.collate_fn)
    train(audio, head, loader, args.steps, args.lr)
    for name in ("test_2src", "test_3src"):
        dataset = scene_dataset(f"{args.data_folder}/manifests/{name}.json",
                                args.data_folder, model["sample_rate"],
                                zones=model["zones"])
        accuracy, by_gap = evaluate(audio, head, dataset, zones, args.n_test)
        print(f"{name}: assignment {accuracy:.3f}; by smallest zone distance {by_gap}")


if __name__ == "__main__":
    main()
