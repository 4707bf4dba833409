"""SpatialCLAPBrain: SpeechBrain training of the Spatial-CLAP towers.

Modules expected in ``modules``: ``audio_encoder``
(:class:`~spatial_clap_sb.models.spatial_clap.SpatialAudioEncoder`), ``text_tower``
(:class:`~spatial_clap_sb.models.spatial_clap.TextTower`), ``temperature``
(:class:`~spatial_clap_sb.models.spatial_clap.LearnableTemperature`) and ``objective``
(:class:`~spatial_clap_sb.objective.SpatialCLAPObjective`, which holds the
source-zone read-out when that term is on). The objective returns its terms by name;
the Brain adds them up with their weights and logs every term, with the loss, in
training and in validation.

Hyperparameters read from ``hparams``: ``lr_schedule`` (and ``pretrained_lr_schedule``)
called per optimizer step, ``opt_class`` and ``pretrained_opt_class``,
``sync_batchnorm``, ``train_logger``, ``epoch_counter``, ``checkpointer``, ``zones``.
"""
import logging
import random
import shutil

import numpy as np
import speechbrain as sb
import torch
from torch.nn.parallel import DistributedDataParallel

from spatial_clap_sb.evaluation import SceneEmbeddings, scene_metrics
from spatial_clap_sb.losses import check_finite
from spatial_clap_sb.objective import TERMS

logger = logging.getLogger(__name__)

# The validation score that picks the best checkpoint: spatial binding, absolute
# direction and retrieval count equally.
VALID_SCORE_KEYS = ("t2a_R@1", "assignment_acc", "direction_acc")


class CompleteCheckpointer(sb.utils.checkpoints.Checkpointer):
    """SpeechBrain's ``Checkpointer``, except that a checkpoint counts only once every
    file of it is written.

    SpeechBrain writes a checkpoint's ``CKPT.yaml`` first and its files after it, so a
    run killed in between would leave a checkpoint that recovery picks (it is the
    newest) and cannot load. Here a ``COMPLETE`` marker is written last; folders
    without it are ignored by recovery and removed at the next save, and the previous
    checkpoint (deleted only after a new one is complete) stays usable.

    Example
    -------
    >>> import tempfile
    >>> layer = torch.nn.Linear(2, 2)
    >>> checkpointer = CompleteCheckpointer(tempfile.mkdtemp(), {"layer": layer})
    >>> saved = checkpointer.save_checkpoint()
    >>> (saved.path / "COMPLETE").exists(), len(checkpointer.list_checkpoints())
    (True, 1)
    """

    MARKER = "COMPLETE"

    def save_checkpoint(self, *args, **kwargs):
        """Saves as SpeechBrain does, then marks the checkpoint complete."""
        if sb.utils.distributed.if_main_process():
            self._remove_incomplete()
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if checkpoint is not None:  # the main process, after its files are written
            (checkpoint.path / self.MARKER).touch()
        return checkpoint

    def _list_checkpoint_dirs(self):
        return [d for d in super()._list_checkpoint_dirs() if (d / self.MARKER).exists()]

    def _remove_incomplete(self):
        if not self.checkpoints_dir.exists():
            return
        for folder in self.checkpoints_dir.iterdir():
            if (folder.is_dir() and folder.name.startswith("CKPT")
                    and not (folder / self.MARKER).exists()):
                shutil.rmtree(folder, ignore_errors=True)


@sb.utils.checkpoints.register_checkpoint_hooks
class GlobalRandomState:
    """The global random generators (Python, NumPy, torch CPU and CUDA) as a checkpoint
    recoverable, so that a resumed run draws what the uninterrupted run drew (dropout,
    the captions and prompts of the objective).

    Example
    -------
    >>> import tempfile, os
    >>> state, path = GlobalRandomState(), os.path.join(tempfile.mkdtemp(), "rng.pt")
    >>> state.save(path)
    >>> first = torch.rand(1)
    >>> state.recover(path)
    >>> bool(torch.rand(1) == first)
    True
    """

    @sb.utils.checkpoints.mark_as_saver
    def save(self, path):
        """Writes the states of every global generator."""
        name, keys, position, has_gauss, gauss = np.random.get_state()
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), position,
                       has_gauss, gauss]
        torch.save({"python": random.getstate(), "numpy": numpy_state,
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all()
                    if torch.cuda.is_available() else []}, path)

    @sb.utils.checkpoints.mark_as_loader
    def recover(self, path, end_of_epoch=True):
        """Restores them (tensors, tuples and lists only: ``weights_only`` loading)."""
        del end_of_epoch  # the same states either way
        state = torch.load(path, weights_only=True)
        random.setstate(_as_tuples(state["python"]))
        name, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss,
                             gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """Python's and NumPy's states are nested tuples; a checkpoint may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) \
        else value


def training_precision(device="cpu"):
    """``"bf16"`` where the device has bfloat16 kernels, else ``"fp32"``: what
    ``precision: auto`` of the recipe trains in.

    On CPUs that is oneDNN's test (AVX-512 and up); on GPUs, CUDA's. Without such
    kernels bf16 autocast would be emulated and slower, so fp32 is kept.

    Example
    -------
    >>> training_precision("cpu") in ("bf16", "fp32")
    True
    """
    if str(device).startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() \
            else "fp32"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


class SpatialCLAPBrain(sb.Brain):
    """Trains and evaluates Spatial-CLAP (see the module docstring for the objective).

    ``precision: auto`` in the hparams becomes :func:`training_precision` of the run's
    device (``--precision=...`` on the command line still wins); evaluation keeps
    ``eval_precision``.
    """

    def __init__(self, *args, hparams=None, run_opts=None, **kwargs):
        given = run_opts is not None and "precision" in getattr(
            run_opts, "overridden_args", run_opts)
        if not given and (hparams or {}).get("precision") == "auto":
            device = run_opts.get("device", "cpu") if run_opts is not None else "cpu"
            hparams = {**hparams, "precision": training_precision(device)}
        super().__init__(*args, hparams=hparams, run_opts=run_opts, **kwargs)

    def compute_forward(self, batch, stage):
        """Embeds the batch's stereo audio (the objective embeds the captions, with
        every other text of the step, in one text-tower call)."""
        batch = batch.to(self.device)
        wavs, lengths = batch.sig
        cached = getattr(batch, "content_frames", None)  # a frozen encoder's, from disk
        audio = self.modules.audio_encoder(
            wavs, lengths, content_frames=None if cached is None else cached.data)
        return {"audio": audio}

    def compute_objectives(self, predictions, batch, stage):
        """The weighted sum of the objective's terms (each kept for the logs); in
        validation, also collects the embeddings for the metrics."""
        audio = predictions["audio"]
        if stage != sb.Stage.TRAIN:
            self.scenes.append(batch, audio)
            if stage == sb.Stage.TEST:
                return torch.zeros((), device=self.device)
        # Training draws paraphrases and prompts from the global generator (checkpointed
        # with the run); validation from a generator of its own, the same every epoch.
        rng = random if stage == sb.Stage.TRAIN else self.valid_rng
        terms = self.modules.objective(audio, batch, self.modules.text_tower,
                                       self.modules.temperature(), rng)
        for name, value in terms.items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + value.item()
        self.term_batches += 1
        return check_finite(self._unwrapped("objective").total(terms),
                            context=list(batch.id))

    def encode_text(self, captions):
        """Unit-norm text embeddings (used by the metrics)."""
        return self.modules.text_tower(list(captions))

    def on_stage_start(self, stage, epoch=None):
        """Resets the per-stage accumulators."""
        self.scenes = SceneEmbeddings()
        self.term_sums, self.term_batches = {}, 0
        self.valid_rng = random.Random(0)

    def term_means(self):
        """Mean of each objective term over the stage's batches, in :data:`TERMS` order."""
        return {name: self.term_sums[name] / self.term_batches
                for name in TERMS if name in self.term_sums}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs every term, computes validation metrics and keeps the best checkpoints."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **self.term_means(),
                                "logit_scale": self.modules.temperature().item()}
            return
        self.modules.eval()
        metrics = scene_metrics(self.scenes, self.encode_text, self.hparams.zones)
        if stage == sb.Stage.VALID:
            present = [metrics[k] for k in VALID_SCORE_KEYS if k in metrics]
            metrics["valid_score"] = sum(present) / len(present)
            if hasattr(self.hparams.epoch_counter, "update_metric"):
                # EpochCounterWithStopper: early stopping on the validation score
                self.hparams.epoch_counter.update_metric(metrics["valid_score"])
            loggable = {"loss": stage_loss, **self.term_means(),
                        **{k: v for k, v in metrics.items() if not isinstance(v, list)}}
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=getattr(self, "train_stats", None), valid_stats=loggable)
            self.checkpointer.save_and_keep_only(
                meta={"valid_score": metrics["valid_score"]},
                max_keys=["valid_score"], num_to_keep=1)
        self.last_metrics = metrics

    def init_optimizers(self):
        """New layers at ``lr``; pretrained layers (if trainable) at their own low rate.

        Two optimizers rather than two parameter groups, because SpeechBrain clips the
        gradient norm of each optimizer's first group only.
        """
        pretrained = set()
        for name in ("audio_encoder", "text_tower"):
            module = self._unwrapped(name)
            pretrained.update(id(p) for p in module.pretrained_parameters())
        new_params = [p for p in self.modules.parameters()
                      if p.requires_grad and id(p) not in pretrained]
        pretrained_params = [p for p in self.modules.parameters()
                             if p.requires_grad and id(p) in pretrained]
        self.optimizer = self.opt_class(new_params)
        self.optimizers_dict = {"optimizer": self.optimizer}
        self.schedules = {"optimizer": self.hparams.lr_schedule}
        if pretrained_params:
            self.optimizers_dict["pretrained_optimizer"] = \
                self.hparams.pretrained_opt_class(pretrained_params)
            self.schedules["pretrained_optimizer"] = self.hparams.pretrained_lr_schedule
        if self.checkpointer is not None:
            for name, optimizer in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, optimizer)

    def _unwrapped(self, name):
        module = self.modules[name]
        return module.module if isinstance(module, DistributedDataParallel) else module

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """Records the number of training steps per epoch (for the LR schedule); a
        dataset with a ``collate_fn`` of its own (scenes mixed on the fly) gets it."""
        if getattr(dataset, "collate_fn", None) is not None:
            loader_kwargs.setdefault("collate_fn", dataset.collate_fn)
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.TRAIN:
            self.steps_per_epoch = len(loader)
        return loader

    def on_fit_start(self):
        """Sizes the LR schedules to the whole run, then the usual set-up."""
        total = getattr(self, "steps_per_epoch", 0) * self.hparams.epoch_counter.limit
        for schedule in (self.hparams.lr_schedule,
                         getattr(self.hparams, "pretrained_lr_schedule", None)):
            if schedule is not None and total:
                schedule.total_steps = total
                schedule.cooldown = int(total * self.hparams.cooldown_fraction)
        super().on_fit_start()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Steps every learning-rate schedule after an optimizer step."""
        if should_step:
            for name, optimizer in self.optimizers_dict.items():
                self.schedules[name](optimizer, self.optimizer_step)

    def _wrap_distributed(self):
        """DDP wrapping with the SyncBatchNorm conversion made optional.

        SpeechBrain always converts BatchNorm to SyncBatchNorm under DDP, which refuses
        CPU tensors; with ``sync_batchnorm: False`` (the CPU default) each rank keeps its
        own batch statistics, so gloo DDP on CPU works.
        """
        if not self.distributed_launch or getattr(self.hparams, "sync_batchnorm", True):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                device_ids = None if self.device == "cpu" else [self.device]
                self.modules[name] = DistributedDataParallel(
                    module, device_ids=device_ids,
                    find_unused_parameters=self.find_unused_parameters)

    def embed_dataset(self, dataset, loader_kwargs=None):
        """Audio embeddings of a whole dataset, in order.

        Returns
        -------
        SceneEmbeddings
        """
        loader_kwargs = {k: v for k, v in (loader_kwargs or {}).items()
                         if k != "ckpt_prefix"}
        loader = self.make_dataloader(dataset, sb.Stage.TEST, ckpt_prefix=None,
                                      **loader_kwargs)
        self.on_stage_start(sb.Stage.TEST)
        self.modules.eval()
        with torch.no_grad():
            for batch in loader:
                self.scenes.append(batch, self.compute_forward(batch, sb.Stage.TEST)["audio"])
        return self.scenes

