#!/usr/bin/env python3
"""Recipe: train, evaluate and export Spatial-CLAP.

    cd recipes/SpatialCLAP
    python train.py hparams/spatial_clap.yaml
    torchrun --nproc_per_node=2 train.py hparams/spatial_clap.yaml   # CPU DDP (gloo)

Steps: prepare the scenes (main process only; skipped when already done), train with
SpatialCLAPBrain, evaluate the best checkpoint on every test manifest, fit the direction
probe, write <output_folder>/test_metrics.json and export <output_folder>/model/.
"""
import json
import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from spatial_clap_sb.brain import SpatialCLAPBrain
from spatial_clap_sb.data.pipelines import dynamic_scene_dataset, scene_dataset
from spatial_clap_sb.data.prepare import prepare_spatial_scenes, split_mixer
from spatial_clap_sb.export import export_model
from spatial_clap_sb.metrics import direction_probe_accuracy

PREPARE_KEYS = ("source_csv", "source_format", "audio_dir", "n_clips_per_class",
                "scene_counts", "zones", "spatialiser", "mixer", "seed")


def dataio_prepare(hparams, manifests):
    """Builds the train, valid and test datasets from the prepared data."""
    def dataset(name, train=False):
        return scene_dataset(manifests[name], hparams["data_folder"],
                             hparams["sample_rate"], hparams["zones"], train=train)

    if hparams["dynamic_mixing"]:
        train = dynamic_scene_dataset(split_mixer(hparams["data_folder"], "train"),
                                      hparams["train_scene_counts"], hparams["seed"],
                                      hparams["zones"])
    else:
        train = dataset(hparams["train_manifest"], train=True).filtered_sorted(
            key_max_value={"n_sources": max(hparams["train_scene_counts"])})
    return (train, dataset(hparams["valid_manifest"]),
            {name: dataset(name) for name in hparams["test_manifests"]})


def test_and_probe(brain, valid_set, test_sets, hparams):
    """Test metrics of the best checkpoint, plus the linear direction probe."""
    loader_opts = hparams["valid_dataloader_opts"]
    results = {}
    for name, test_set in test_sets.items():
        brain.evaluate(test_set, max_key="valid_score",
                       test_loader_kwargs=dict(loader_opts))  # SB mutates the dict
        results[name] = brain.last_metrics
    probe_sets = [n for n, r in results.items() if "direction_acc" in r]
    if probe_sets:
        valid = brain.embed_dataset(valid_set, loader_opts)
        fit = [i for i, z in enumerate(valid.zone_index) if z >= 0]
        valid_audio = valid.audio_matrix()
        for name in probe_sets:
            test = brain.embed_dataset(test_sets[name], loader_opts)
            score = [i for i, z in enumerate(test.zone_index) if z >= 0]
            results[name]["direction_probe_acc"] = direction_probe_accuracy(
                valid_audio[fit], [valid.zone_index[i] for i in fit],
                test.audio_matrix()[score], [test.zone_index[i] for i in score],
                n_zones=len(hparams["zones"]))
    return results


def main():
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)

    run_on_main(prepare_spatial_scenes, kwargs={
        "data_folder": hparams["data_folder"],
        **{key: hparams[key] for key in PREPARE_KEYS}})
    manifests = {name: os.path.join(hparams["data_folder"], "manifests", f"{name}.json")
                 for name in hparams["scene_counts"]}
    train_set, valid_set, test_sets = dataio_prepare(hparams, manifests)

    brain = SpatialCLAPBrain(modules=hparams["modules"], opt_class=hparams["opt_class"],
                             hparams=hparams, run_opts=run_opts,
                             checkpointer=hparams["checkpointer"])
    brain.fit(hparams["epoch_counter"], train_set, valid_set,
              train_loader_kwargs=hparams["train_dataloader_opts"],
              valid_loader_kwargs=hparams["valid_dataloader_opts"])

    results = test_and_probe(brain, valid_set, test_sets, hparams)
    if sb.utils.distributed.if_main_process():
        with open(os.path.join(hparams["output_folder"], "test_metrics.json"), "w") as f:
            json.dump(results, f, indent=2)
        export_model(os.path.join(hparams["output_folder"], "model"), hparams_file,
                     overrides, brain.modules)
    print(json.dumps({name: {k: v for k, v in r.items() if not isinstance(v, list)}
                      for name, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
