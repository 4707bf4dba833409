#!/usr/bin/env python3
"""Recipe: train, evaluate and export Spatial-CLAP.

    cd recipes/SpatialCLAP
    python train.py hparams/spatial_clap.yaml
    torchrun --nproc_per_node=2 train.py hparams/spatial_clap.yaml   # CPU DDP (gloo)

    # fine-tune an exported model on your own mono clips (spatialised here) ...
    python train.py hparams/finetune.yaml --pretrained_model=DIR --source_csv=clips.csv
    # ... or on your own stereo recordings, used as they are
    python train.py hparams/finetune.yaml --pretrained_model=DIR \
        --manifests="{train: train.json, valid: valid.json, test: test.json}"

Steps: prepare the scenes (main process only; skipped when already done, and when
``manifests`` names the user's own; bad clips and splits too small for their scenes
stop it before anything is rendered), load the pretrained model if fine-tuning and
evaluate it as it is, train with SpatialCLAPBrain, evaluate the best checkpoint on
every test manifest, fit the direction probe, write <output_folder>/test_metrics.json
and export <output_folder>/model/. When fine-tuning, test_metrics.json holds ``before``
(the pretrained model) and ``after`` (the fine-tuned one), and the log compares them.
"""
import io
import json
import logging
import os
import sys

import ruamel.yaml
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from hyperpyyaml.core import recursive_update
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.parameter_transfer import Pretrainer

from spatial_clap_sb.brain import SpatialCLAPBrain
from spatial_clap_sb.data.checks import (
    DataCheckError,
    check_split_capacity,
    checked_manifests,
)
from spatial_clap_sb.data.content_features import (
    ContentFeatureCache,
    is_frozen_pretrained,
)
from spatial_clap_sb.data.pipelines import dynamic_scene_dataset, scene_dataset
from spatial_clap_sb.data.prepare import (
    HELDOUT_SUFFIX,
    manifest_names,
    prepare_spatial_scenes,
    split_mixer,
)
from spatial_clap_sb.evaluation import direction_probe, scene_metrics
from spatial_clap_sb.export import check_checkpoint_fits, export_model
from spatial_clap_sb.files import atomic_write_json
from spatial_clap_sb.models.source_zone import source_classes
from spatial_clap_sb.trust import UntrustedModelError, check_weights

PREPARE_KEYS = ("source_csv", "source_format", "audio_dir", "n_clips_per_class",
                "scene_counts", "zones", "spatialiser", "mixer", "split_fractions",
                "split_by", "seed", "heldout_language", "on_bad_data", "audioset_tags",
                "max_caption_similarity")
# The metrics of the before/after table of a fine-tuning run.
COMPARED_METRICS = ("t2a_R@1", "a2t_R@1", "assignment_acc", "direction_acc",
                    "direction_probe_acc")

logger = logging.getLogger(__name__)


def prepare_manifests(hparams):
    """Paths of the manifests: the user's own, or those simulated by the prepare step."""
    if hparams.get("manifests"):
        if hparams["dynamic_mixing"]:
            raise ValueError("dynamic_mixing needs source clips to mix; with your own "
                             "manifests set --dynamic_mixing=False.")
        # Every file and entry is checked before the first step; with
        # on_bad_data=skip, copies without the bad entries go to the output folder.
        return checked_manifests(dict(hparams["manifests"]), hparams["data_folder"],
                                 hparams["sample_rate"], hparams["on_bad_data"],
                                 os.path.join(hparams["output_folder"],
                                              "checked_manifests"))
    run_on_main(prepare_spatial_scenes, kwargs={
        "data_folder": hparams["data_folder"],
        **{key: hparams[key] for key in PREPARE_KEYS}})
    return {name: os.path.join(hparams["data_folder"], "manifests", f"{name}.json")
            for name in manifest_names(hparams["scene_counts"],
                                       hparams["heldout_language"], hparams["zones"])}


def content_feature_cache(hparams, manifests, run_opts):
    """With a frozen pretrained content encoder and stored scenes: its features of
    every scene file, computed once (main process) and read from disk after; else None.
    """
    encoder = hparams["model"]["content_encoder"]
    if not is_frozen_pretrained(encoder):
        return None
    if hparams["dynamic_mixing"]:
        logger.warning("The frozen content encoder runs on every scene of every step: "
                       "scenes mixed on the fly cannot reuse features. "
                       "--dynamic_mixing=False trains on stored scenes whose features "
                       "are computed once.")
        return None
    cache = ContentFeatureCache(encoder, os.path.join(hparams["data_folder"],
                                                      "content_features"),
                                hparams["sample_rate"],
                                run_opts["device"] or ("cuda:0" if torch.cuda.is_available()
                                                       else "cpu"))
    wavs = []
    for path in manifests.values():
        with open(path, encoding="utf-8") as f:
            wavs += [entry["wav"].replace("{data_root}", hparams["data_folder"])
                     for entry in json.load(f).values()]
    run_on_main(cache.fill, args=[wavs])
    return cache


def dataio_prepare(hparams, manifests, content_cache=None):
    """Builds the train, valid and test datasets."""
    def dataset(name, train=False):
        return scene_dataset(manifests[name], hparams["data_folder"],
                             hparams["sample_rate"], hparams["zones"], train=train,
                             seed=hparams["seed"], epoch_counter=hparams["epoch_counter"],
                             content_cache=content_cache)

    if hparams["dynamic_mixing"]:
        mixer = split_mixer(hparams["data_folder"], "train")
        check_split_capacity(
            {"train": mixer.clips}, {"train": max(hparams["train_scene_counts"])},
            hparams["source_csv"] or "the generated library",
            "Lower the number of sources in --train_scene_counts or add clips.")
        train = dynamic_scene_dataset(mixer, hparams["train_scene_counts"],
                                      hparams["seed"], hparams["zones"],
                                      epoch_counter=hparams["epoch_counter"])
        labels = {name for clip in mixer.clips for name in source_classes(vars(clip))}
    else:
        max_sources = max(k for k, n in hparams["train_scene_counts"].items() if n > 0)
        train = dataset("train", train=True).filtered_sorted(
            key_max_value={"n_sources": max_sources})
        with train.output_keys_as(["sources"]):
            labels = {name for item in train for s in item["sources"]
                      for name in source_classes(s)}
    tests = [name for name in manifests if name not in ("train", "valid")]
    return train, dataset("valid"), {name: dataset(name) for name in tests}, labels


def training_modules(hparams, labels):
    """The model's modules plus the objective, given its source-zone read-out when
    that term is on.

    The read-out's classes are those of the training sources, known only once the data
    is prepared, so it is added here rather than in the YAML; it is checkpointed with
    the run (an interrupted run resumes it) but not exported.
    """
    objective = hparams["objective"]
    if objective.add_source_zone_head(labels, hparams["model"]["embedding_dim"]):
        hparams["checkpointer"].add_recoverable("objective", objective)
    return {**hparams["modules"], "objective": objective}


def load_pretrained(hparams):
    """Loads an exported model's weights into the modules before fine-tuning.

    A checkpoint of this run, when there is one, is recovered afterwards by fit() and
    takes precedence, so an interrupted fine-tuning resumes where it stopped.
    """
    folder = hparams.get("pretrained_model")
    if not folder:
        return
    modules = {name: hparams["modules"][name] for name in hparams["model"]["modules"]}
    missing = [n for n in modules if not os.path.exists(os.path.join(folder, f"{n}.ckpt"))]
    if missing:
        raise FileNotFoundError(f"{folder} is not an exported Spatial-CLAP model: no "
                                f"{', '.join(m + '.ckpt' for m in missing)}.")
    pretrainer = Pretrainer(
        collect_in=os.path.join(hparams["save_folder"], "pretrained"), loadables=modules,
        paths={name: os.path.abspath(os.path.join(folder, f"{name}.ckpt"))
               for name in modules})
    for name, module in modules.items():
        check_weights(os.path.join(folder, f"{name}.ckpt"))  # tensors only: no code
        check_checkpoint_fits(module, os.path.join(folder, f"{name}.ckpt"), name,
                              "set this recipe's model keys (text_pooling_queries, "
                              "text_trainable_layers, ...) to those in "
                              f"{os.path.join(folder, 'hyperparams.yaml')}")
    run_on_main(pretrainer.collect_files)
    pretrainer.load_collected()


def freeze_modules(hparams):
    """Freezes the submodules named in ``frozen_modules`` (e.g. ``audio_encoder.spatial_encoder``).

    Their weights take no gradient, and they always run as in inference (batch norm on
    its stored statistics, no dropout), whatever mode the Brain sets.
    """
    for dotted in hparams.get("frozen_modules") or []:
        module = hparams["modules"]
        for part in dotted.split("."):
            module = module[part] if isinstance(module, dict) else getattr(module, part, None)
            if module is None:
                raise ValueError(f"frozen_modules: no module {dotted!r}; names look like "
                                 "audio_encoder.spatial_encoder or text_tower.projection.")
        module.requires_grad_(False)
        module.register_forward_pre_hook(_run_as_in_inference)


def _run_as_in_inference(module, _inputs):
    module.eval()  # returns None: a pre-hook's return value would replace the inputs


def test_and_probe(brain, valid_set, test_sets, hparams):
    """Test metrics of the model as it is now, plus the linear direction probe."""
    loader_opts = hparams["valid_dataloader_opts"]
    results, embedded = {}, {}
    for name, test_set in test_sets.items():
        twin_of = name[:-len(HELDOUT_SUFFIX)] if name.endswith(HELDOUT_SUFFIX) else None
        scenes = (embedded[twin_of].with_text_of(test_set) if twin_of in embedded
                  else brain.embed_dataset(test_set, loader_opts))
        # A held-out-language twin holds the same scenes in other words: its audio
        # embeddings are reused.
        embedded.setdefault(name, scenes)
        results[name] = scene_metrics(scenes, brain.encode_text, hparams["zones"])
    # The probe reads audio embeddings only: a held-out-language twin has the same.
    probe_sets = [n for n, r in results.items()
                  if "direction_acc" in r and not n.endswith(HELDOUT_SUFFIX)]
    valid = brain.embed_dataset(valid_set, loader_opts) if probe_sets else None
    for name in probe_sets:
        accuracy = direction_probe(valid, embedded[name], len(hparams["zones"]))
        if accuracy is not None:
            results[name]["direction_probe_acc"] = accuracy
    return results


def seeded_generator(seed):
    """A torch generator of its own, seeded."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def metrics_before_training(brain, valid_set, test_sets, hparams):
    """Test metrics of the pretrained model as loaded, before any fine-tuning step.

    Kept in <output_folder>/before_metrics.json: an interrupted run that resumes from a
    fine-tuned checkpoint reads them there instead of measuring its own weights.
    """
    path = os.path.join(hparams["output_folder"], "before_metrics.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    before = test_and_probe(brain, valid_set, test_sets, hparams)
    if sb.utils.distributed.if_main_process():
        atomic_write_json(path, before)
    return before


def comparison_table(before, after):
    """A text table of the headline metrics of each test set, before and after.

    Example
    -------
    >>> print(comparison_table({"test": {"t2a_R@1": 0.1}}, {"test": {"t2a_R@1": 0.3}}))
    test set  metric   before  after  change
    test      t2a_R@1  0.100   0.300  +0.200
    """
    rows = [("test set", "metric", "before", "after", "change")]
    for name, metrics in after.items():
        for key in COMPARED_METRICS:
            if key in metrics and key in before.get(name, {}):
                old, new = before[name][key], metrics[key]
                rows.append((name, key, f"{old:.3f}", f"{new:.3f}", f"{new - old:+.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def resolve_extends(hparams_file, overrides):
    """The hparams file to load and its overrides, following ``extends:``.

    A file whose ``extends:`` key names another hparams file (relative to it) holds
    only the keys that differ from that file: it is loaded as that file with its keys
    as overrides (nested mappings merge, as command-line overrides do), and the
    command-line overrides apply last.

    Arguments
    ---------
    hparams_file : str
        The hparams file given on the command line.
    overrides : str or dict
        The command-line overrides (YAML text, as ``sb.parse_arguments`` returns).

    Returns
    -------
    hparams_file : str
        The file to load (``hparams_file`` itself when it extends nothing).
    overrides : str
        The overrides to load it with, as YAML text.

    Example
    -------
    >>> resolve_extends("hparams/finetune.yaml", "seed: 7")[0]
    'hparams/spatial_clap.yaml'
    """
    yaml = ruamel.yaml.YAML()
    with open(hparams_file, encoding="utf-8") as f:
        own_keys = yaml.load(f)
    if not own_keys or "extends" not in own_keys:
        return hparams_file, overrides
    base_file = os.path.join(os.path.dirname(hparams_file), own_keys.pop("extends"))
    command_line = yaml.load(overrides) if isinstance(overrides, str) else overrides
    if command_line:
        recursive_update(own_keys, command_line)
    merged = io.StringIO()
    yaml.dump(own_keys, merged)
    return resolve_extends(base_file, merged.getvalue())


def main():
    argv = sys.argv[1:]
    if not torch.cuda.is_available() and not any(
            a.startswith("--distributed_backend") for a in argv):
        argv.append("--distributed_backend=gloo")  # SpeechBrain's default, nccl, needs GPUs
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    hparams_file, overrides = resolve_extends(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    sb.create_experiment_directory(hparams["output_folder"],
                                   hyperparams_to_save=hparams_file, overrides=overrides)

    try:
        load_pretrained(hparams)  # first: a refused model folder costs no preparation
        manifests = prepare_manifests(hparams)
        content_cache = content_feature_cache(hparams, manifests, run_opts)
        train_set, valid_set, test_sets, labels = dataio_prepare(hparams, manifests,
                                                                 content_cache)
    except (DataCheckError, UntrustedModelError) as error:  # the message is the report
        sys.exit(f"train.py: {error}")
    freeze_modules(hparams)

    brain = SpatialCLAPBrain(modules=training_modules(hparams, labels),
                             opt_class=hparams["opt_class"],
                             hparams=hparams, run_opts=run_opts,
                             checkpointer=hparams["checkpointer"])
    before = None
    if hparams.get("pretrained_model"):
        before = metrics_before_training(brain, valid_set, test_sets, hparams)
    # The loaders draw their worker seeds from generators of their own, so that the
    # global ones (checkpointed with the run) advance only with training itself: a run
    # resumed from any checkpoint continues exactly as the uninterrupted one.
    brain.fit(hparams["epoch_counter"], train_set, valid_set,
              train_loader_kwargs=dict(hparams["train_dataloader_opts"],
                                       generator=seeded_generator(hparams["seed"])),
              valid_loader_kwargs=dict(hparams["valid_dataloader_opts"],
                                       generator=seeded_generator(hparams["seed"])))

    brain.on_evaluate_start(max_key="valid_score")  # the best checkpoint
    results = test_and_probe(brain, valid_set, test_sets, hparams)
    table = comparison_table(before, results) if before is not None else None
    if before is not None:
        results = {"before": before, "after": results}
    if sb.utils.distributed.if_main_process():
        if table:
            logger.info("Test metrics before and after fine-tuning:\n%s", table)
            with open(hparams["train_log"], "a", encoding="utf-8") as f:
                f.write(f"Test metrics before and after fine-tuning:\n{table}\n")
        atomic_write_json(os.path.join(hparams["output_folder"], "test_metrics.json"),
                          results)
        export_model(os.path.join(hparams["output_folder"], "model"), hparams_file,
                     overrides, {name: brain.modules[name]
                                 for name in hparams["model"]["modules"]})
    print(json.dumps(_scalars(results), indent=2))


def _scalars(results):
    """The results without per-item lists (for printing)."""
    return {k: _scalars(v) if isinstance(v, dict) else v
            for k, v in results.items() if not isinstance(v, list)}


if __name__ == "__main__":
    main()
