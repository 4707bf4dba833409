"""Evaluates an exported Spatial-CLAP model on a scene manifest.

The logic behind ``spatial-clap evaluate`` and ``recipes/SpatialCLAP/evaluate.py``:
the manifest becomes a dataset with :func:`~spatial_clap_sb.data.pipelines.scene_dataset`
(the recipe's own pipeline: same captions, same permuted-assignment negatives, same zone
labels), the audio is embedded with the inference interface
(:meth:`~spatial_clap_sb.inference.SpatialCLAP.encode_signals`, so a scene gets the
embedding that ``encode_files`` gives its file), and the metrics come from
:func:`spatial_clap_sb.evaluation.scene_metrics`, the function behind the recipe's
``test_metrics.json``: ``t2a_R@1/5/10``, ``a2t_R@1/5/10``, ``mAP@10``,
``assignment_acc`` (scenes with several sources), ``direction_acc`` and
``direction_confusion`` (one-source scenes), ``n_scenes``.

Example
-------
>>> from spatial_clap_sb.inference import SpatialCLAP
>>> model = SpatialCLAP.from_hparams(source="results/spatial_clap/1234/model")
...  # doctest: +SKIP
>>> metrics = evaluate_manifest(model, "data/generated/manifests/test_2src.json",
...                             data_root="data/generated", output_dir="eval")
...  # doctest: +SKIP
>>> sorted(metrics)[:3]  # doctest: +SKIP
['a2t_R@1', 'a2t_R@10', 'a2t_R@5']
"""
import logging
import os
from types import SimpleNamespace

import numpy as np

from spatial_clap_sb.data.pipelines import scene_dataset
from spatial_clap_sb.evaluation import SceneEmbeddings, direction_probe, scene_metrics
from spatial_clap_sb.files import atomic_write_json
from spatial_clap_sb.plots import plot_confusion_matrix, plot_similarity_matrix

logger = logging.getLogger(__name__)

__all__ = ["embed_scenes", "evaluate_manifest", "plot_scene_similarity",
           "METRICS_FILE", "SIMILARITY_PLOT", "CONFUSION_PLOT"]

METRICS_FILE = "metrics.json"
SIMILARITY_PLOT = "similarity_matrix.png"
CONFUSION_PLOT = "direction_confusion.png"


def embed_scenes(model, dataset, batch_size=8, progress=False):
    """Embeds every scene of a scene dataset with the inference interface.

    Arguments
    ---------
    model : spatial_clap_sb.inference.SpatialCLAP
        The loaded model.
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        From :func:`~spatial_clap_sb.data.pipelines.scene_dataset` (keys ``id``,
        ``sig``, ``captions``, ``permuted``, ``zone_index``, ``n_sources``).
    batch_size : int
        Scenes read and embedded per step.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    spatial_clap_sb.evaluation.SceneEmbeddings
        In manifest order.
    """
    scenes = SceneEmbeddings()
    n_items = len(dataset)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_items, desc="Evaluating", unit="scene")
    try:
        for start in range(0, n_items, batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, n_items))]
            audio = model.encode_signals([item["sig"] for item in items],
                                         batch_size=batch_size)
            batch = SimpleNamespace(**{key: [item[key] for item in items] for key in
                                       ("id", "captions", "permuted", "zone_index",
                                        "n_sources")})
            scenes.append(batch, audio)
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
    return scenes


def plot_scene_similarity(model, scenes, path, n_scenes=8):
    """Similarity of the first scenes with their captions and permuted captions.

    Rows are the first ``n_scenes`` scenes; columns are, scene by scene, its caption
    (phrasing 0, outlined in red) followed by its permuted-assignment captions (marked
    ``[perm]``). A model that binds content to direction shows bright outlined cells
    and darker cells for their permutations.

    Arguments
    ---------
    model : spatial_clap_sb.inference.SpatialCLAP
        Encodes the captions.
    scenes : spatial_clap_sb.evaluation.SceneEmbeddings
        Embedded scenes (from :func:`embed_scenes`).
    path : str
        Output PNG.
    n_scenes : int
        How many scenes (rows).

    Returns
    -------
    str
        ``path``.
    """
    rows = list(range(min(n_scenes, len(scenes))))
    if not rows:
        raise ValueError("No scene to plot.")
    captions, labels, true_cells = [], [], []
    for i in rows:
        true_cells.append((i, len(captions)))
        captions.append(scenes.captions[i][0])
        labels.append(scenes.captions[i][0])
        for caption in scenes.permuted[i]:
            captions.append(caption)
            labels.append(f"[perm] {caption}")
    audio = scenes.audio_matrix()[rows]
    scores = model.similarity(audio, model.encode_text(captions)).cpu().numpy()
    return plot_similarity_matrix(
        scores, [scenes.ids[i] for i in rows], labels, path,
        "Scenes vs their captions (red) and permuted captions", highlight=true_cells)


def evaluate_manifest(model, manifest, data_root=None, output_dir=None, batch_size=8,
                      n_plot=8, progress=False, probe_manifest=None):
    """Metrics of a model on a scene manifest, with ``metrics.json`` and PNG plots.

    Arguments
    ---------
    model : spatial_clap_sb.inference.SpatialCLAP
        The loaded model; its ``sample_rate`` and zone vocabulary are used.
    manifest : str
        SpeechBrain JSON scene manifest (``wav``, ``caption`` and, for the spatial
        metrics, ``sources`` with ``caption`` and ``zone``).
    data_root : str, optional
        Replaces ``{data_root}`` in the ``wav`` paths (default: the manifest's folder).
    output_dir : str, optional
        Where to write ``metrics.json``, ``similarity_matrix.png`` and, when the
        manifest has one-source scenes, ``direction_confusion.png``; nothing is written
        when None.
    batch_size : int
        Scenes embedded per step.
    n_plot : int
        Scenes in the similarity-matrix plot.
    progress : bool
        Show a tqdm progress bar.
    probe_manifest : str, optional
        A manifest of other scenes (the recipe's ``valid.json``, say; same
        ``data_root``) whose one-source scenes fit a linear direction probe on the audio
        embeddings: adds ``direction_probe_acc``, as the recipe reports it
        (:func:`spatial_clap_sb.evaluation.direction_probe`).

    Returns
    -------
    dict
        The metrics of :func:`spatial_clap_sb.evaluation.scene_metrics`.
    """
    if data_root is None:
        data_root = os.path.dirname(os.path.abspath(manifest))
    scenes = _embed_manifest(model, manifest, data_root, batch_size, progress)
    metrics = scene_metrics(scenes, model.encode_text, zones=model.zones)
    if probe_manifest is not None:
        fit = _embed_manifest(model, probe_manifest, data_root, batch_size, progress)
        accuracy = direction_probe(fit, scenes, len(model.zones))
        if accuracy is None:
            raise ValueError(f"The direction probe needs one-source scenes in both "
                             f"{probe_manifest} and {manifest}.")
        metrics["direction_probe_acc"] = accuracy
    metrics = {key: _plain(value) for key, value in metrics.items()}
    if output_dir is not None:
        atomic_write_json(os.path.join(output_dir, METRICS_FILE), metrics)
        plot_scene_similarity(model, scenes, os.path.join(output_dir, SIMILARITY_PLOT),
                              n_scenes=n_plot)
        if "direction_confusion" in metrics:
            plot_confusion_matrix(metrics["direction_confusion"], model.zone_names,
                                  os.path.join(output_dir, CONFUSION_PLOT))
        logger.info("Wrote the metrics and plots of %s to %s", manifest, output_dir)
    return metrics


def _embed_manifest(model, manifest, data_root, batch_size, progress):
    """The scenes of a manifest, embedded (errors name the manifest)."""
    if not os.path.isfile(manifest):
        raise FileNotFoundError(f"Manifest not found: {manifest}")
    dataset = scene_dataset(manifest, data_root, model.sample_rate,
                            zones=model.zones.to_config())
    if len(dataset) == 0:
        raise ValueError(f"Manifest {manifest} holds no scene.")
    return embed_scenes(model, dataset, batch_size=batch_size, progress=progress)


def _plain(value):
    """NumPy scalars and arrays as Python numbers and lists (for JSON)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
