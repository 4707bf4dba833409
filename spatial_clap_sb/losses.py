"""Training losses of Spatial-CLAP.

* :func:`clap_loss`: the symmetric InfoNCE (CLIP/CLAP) loss; under DDP its negatives
  come from every rank (:func:`gather_with_grad`).
* :func:`scl_loss`: spatial contrastive learning, whose hard negatives are the captions
  of the same scene with the source-to-direction assignment permuted.
* :func:`prompt_classification_loss`: cross-entropy against a set of prompt embeddings
  (e.g. direction-only prompts such as "a sound on the left").
* :func:`check_finite`: fails loudly, naming the batch, when a loss is NaN or infinite.

All losses take L2-normalised embeddings (the model normalises them) and do **not**
normalise again, so their values and gradients are those of the dot products given.
``logit_scale`` is always the already-exponentiated scale (``exp(log_scale)``), a tensor
(a Python float is accepted too).

Distributed convention
----------------------
Under DDP (``torch.distributed`` initialised, world size ``W > 1``), :func:`clap_loss`
with ``gather=True`` is written so that, **after DDP averages the parameter gradients
over the ranks**, training is identical to a single process that sees the concatenated
global batch:

* every rank returns the loss *value* of the global batch (so logs agree across ranks);
* the gradient that reaches a rank's local embeddings is ``W`` times the gradient of the
  global loss with respect to them (DDP's division by ``W`` then gives the single-process
  parameter gradient);
* the gradient of ``logit_scale`` on each rank is a share of the global one whose
  average over ranks (what DDP computes for a replicated parameter) is the
  single-process gradient.

The other losses (:func:`scl_loss`, :func:`prompt_classification_loss`, and the
source-zone read-out) are means over rows, and ranks hold different numbers of the rows
that count (two-source scenes, one-source scenes, labelled sources): each rank returns
its rows' summed loss times ``W`` over the global number of rows
(:func:`global_mean_cross_entropy`), so that DDP's averaging gives the gradient of the
mean over the global batch, and the mean of the ranks' values is its value.
"""
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "gather_with_grad",
    "clap_loss",
    "scl_loss",
    "prompt_classification_loss",
    "check_finite",
]


def _distributed_world():
    """Returns ``(rank, world_size)``, or ``(0, 1)`` when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns this rank's gradient slice.

    Forward gathers the (possibly unequal) per-rank batch sizes, pads every rank's
    tensor to the largest size, all_gathers, and trims the padding. Backward
    all_reduces (sums) the gradient of the whole gathered tensor, since every rank's
    loss may depend on every row, and returns the rows of this rank.
    """

    @staticmethod
    def forward(ctx, x):
        world_size = dist.get_world_size()
        rank = dist.get_rank()
        local_size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
        sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
        dist.all_gather(sizes, local_size)
        sizes = [int(s.item()) for s in sizes]
        max_size = max(sizes)
        x = x.contiguous()
        if x.shape[0] < max_size:
            pad = x.new_zeros((max_size - x.shape[0],) + tuple(x.shape[1:]))
            padded = torch.cat([x, pad], dim=0)
        else:
            padded = x
        buffers = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(buffers, padded)
        gathered = torch.cat([buf[:n] for buf, n in zip(buffers, sizes)], dim=0)
        ctx.offset = sum(sizes[:rank])
        ctx.local_size = sizes[rank]
        return gathered

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.offset : ctx.offset + ctx.local_size]


def gather_with_grad(x):
    """Concatenates ``x`` from all ranks along dim 0, keeping the gradient path.

    Identity when ``torch.distributed`` is not initialised or the world size is 1.
    Ranks may hold different batch sizes: sizes are exchanged first, tensors are padded
    to the largest and trimmed after the gather. The output is ordered by rank.

    Backward all_reduces (sums) the gradient of the gathered tensor and returns this
    rank's rows: the gradient of the *sum over ranks* of the losses that used the
    gathered tensor. Every rank must call it (and backward) in the same order, as with
    any collective.

    Arguments
    ---------
    x : torch.Tensor
        ``[B, ...]`` local tensor; all ranks must agree on the trailing shape, dtype and
        device type.

    Returns
    -------
    torch.Tensor
        ``[sum of B over ranks, ...]``.

    Example
    -------
    >>> x = torch.randn(3, 4, requires_grad=True)
    >>> gather_with_grad(x) is x  # not distributed: identity
    True
    """
    _, world_size = _distributed_world()
    if world_size == 1:
        return x
    return _GatherWithGrad.apply(x)


def _as_scale(logit_scale, like):
    """Returns ``logit_scale`` as a tensor on the device/dtype of ``like``."""
    if not torch.is_tensor(logit_scale):
        return torch.tensor(float(logit_scale), dtype=like.dtype, device=like.device)
    return logit_scale


def global_mean_cross_entropy(logits, targets):
    """Cross-entropy averaged over the rows of the global batch (DDP convention above).

    Not distributed: ``F.cross_entropy(logits, targets)``. Under DDP with world size
    ``W``: ``W * sum(this rank's row losses) / (rows on all ranks)``, which every rank
    must call (a rank with no rows too: it contributes a zero in the graph).

    Arguments
    ---------
    logits : torch.Tensor
        ``[R, C]`` (``R`` may be 0 under DDP).
    targets : torch.Tensor
        ``[R]`` class indices.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(global_mean_cross_entropy(logits, torch.tensor([0, 0])).item(), 4)
    1.1269
    """
    _, world_size = _distributed_world()
    if world_size == 1:
        return F.cross_entropy(logits, targets)
    count = torch.tensor([float(logits.shape[0])], device=logits.device)
    dist.all_reduce(count)
    if count.item() == 0:
        return logits.sum() * 0.0
    rows = F.cross_entropy(logits, targets, reduction="sum")
    return rows * world_size / count[0]


def _zero_with_graph(*tensors):
    """A scalar zero connected to the graph of every tensor given (so DDP sees them)."""
    zero = None
    for t in tensors:
        if torch.is_tensor(t) and t.is_floating_point():
            term = t.sum() * 0.0
            zero = term if zero is None else zero + term
    return zero


def clap_loss(audio_emb, text_emb, logit_scale, gather=True):
    """Symmetric InfoNCE loss between paired audio and text embeddings.

    Row ``i`` of ``audio_emb`` and row ``i`` of ``text_emb`` are a positive pair; every
    other row of the (global) batch is a negative. The loss is the mean of the
    audio-to-text and text-to-audio cross-entropies, each averaged over the rows of the
    global batch. Identical captions occurring twice in one batch are *not* detected:
    they count as negatives of each other, as in CLIP/CLAP.

    With ``gather=True`` under DDP, negatives come from every rank (open_clip's "local
    loss": a rank's rows are scored against the gathered columns, which costs
    ``B_local x B_global`` instead of the full square). Ranks may hold unequal batch
    sizes: each row's cross-entropy is weighted so that the sum of the ranks' losses is
    ``W`` times the global mean loss. See the module docstring for the exact gradient
    convention; in short, with DDP's gradient averaging the update equals that of one
    process on the concatenated batch, and the returned value is the global loss on
    every rank.

    Arguments
    ---------
    audio_emb : torch.Tensor
        ``[B, D]`` L2-normalised audio embeddings (not normalised again here).
    text_emb : torch.Tensor
        ``[B, D]`` L2-normalised text embeddings, paired row by row with ``audio_emb``.
    logit_scale : torch.Tensor or float
        The already-exponentiated temperature scale (scalar).
    gather : bool
        Gather negatives from all ranks when running distributed (default True). With
        ``False`` each rank computes the loss on its own batch only.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> a = F.normalize(torch.randn(4, 8), dim=-1)
    >>> aligned = clap_loss(a, a, torch.tensor(10.0))
    >>> shuffled = clap_loss(a, a.roll(1, dims=0), torch.tensor(10.0))
    >>> bool(aligned < shuffled)
    True
    """
    if audio_emb.shape != text_emb.shape or audio_emb.dim() != 2:
        raise ValueError(
            f"clap_loss expects paired [B, D] embeddings; got audio "
            f"{tuple(audio_emb.shape)} and text {tuple(text_emb.shape)}"
        )
    scale = _as_scale(logit_scale, audio_emb)
    rank, world_size = _distributed_world()
    if not gather or world_size == 1:
        logits = scale * audio_emb @ text_emb.t()
        labels = torch.arange(audio_emb.shape[0], device=audio_emb.device)
        return 0.5 * (
            F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)
        )

    all_audio = gather_with_grad(audio_emb)
    all_text = gather_with_grad(text_emb)
    n_global = all_audio.shape[0]
    n_local = audio_emb.shape[0]
    # Offset of this rank's rows in the gathered batch (known from the gather sizes).
    sizes = torch.tensor([n_local], dtype=torch.long, device=audio_emb.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world_size)]
    dist.all_gather(all_sizes, sizes)
    offset = int(sum(int(s.item()) for s in all_sizes[:rank]))
    labels = torch.arange(n_local, device=audio_emb.device) + offset

    logits_a2t = scale * audio_emb @ all_text.t()  # [B_local, N]
    logits_t2a = scale * text_emb @ all_audio.t()  # [B_local, N]
    row_sum = 0.5 * (
        F.cross_entropy(logits_a2t, labels, reduction="sum")
        + F.cross_entropy(logits_t2a, labels, reduction="sum")
    )
    # sum over ranks of local_loss == W * (global sum / N) == W * global mean loss
    local_loss = row_sum * (world_size / n_global)
    # Report the global loss value on every rank; the gradient stays local_loss's.
    global_sum = row_sum.detach().clone()
    dist.all_reduce(global_sum, op=dist.ReduceOp.SUM)
    global_loss = global_sum / n_global
    return local_loss + (global_loss - local_loss.detach())


def scl_loss(audio_emb, text_emb, negative_text_emb, negative_mask, logit_scale):
    """Spatial contrastive learning loss with permuted-assignment hard negatives.

    For each scene ``i`` the candidates are its true caption ``t_i`` and the captions
    ``n_i1 .. n_iP`` that describe the same sources with the directions permuted. The
    loss of a row is the cross-entropy of
    ``scale * [a_i . t_i, a_i . n_i1, ..., a_i . n_iP]`` (masked candidates excluded)
    with target 0, averaged over the rows that have at least one real negative. Rows
    without negatives (single-source scenes) are ignored; when no row has any, the
    result is a zero that still belongs to the graph. Purely local: no gather.

    Arguments
    ---------
    audio_emb : torch.Tensor
        ``[B, D]`` L2-normalised audio embeddings.
    text_emb : torch.Tensor
        ``[B, D]`` L2-normalised embeddings of the true captions.
    negative_text_emb : torch.Tensor
        ``[B, P, D]`` L2-normalised embeddings of the permuted captions (padding rows
        may hold anything finite).
    negative_mask : torch.Tensor or None
        ``[B, P]`` bool, True where ``negative_text_emb`` is a real negative. ``None``
        means all are real.
    logit_scale : torch.Tensor or float
        The already-exponentiated temperature scale.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> n = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    >>> mask = torch.tensor([[True], [False]])  # scene 1 has a single source
    >>> loss = scl_loss(a, t, n, mask, 1.0)
    >>> round(loss.item(), 4)  # -log(e / (e + 1))
    0.3133
    """
    if negative_text_emb.dim() != 3 or negative_text_emb.shape[0] != audio_emb.shape[0]:
        raise ValueError(
            f"negative_text_emb must be [B, P, D] with B={audio_emb.shape[0]}; "
            f"got {tuple(negative_text_emb.shape)}"
        )
    scale = _as_scale(logit_scale, audio_emb)
    n_rows, n_neg = negative_text_emb.shape[:2]
    if negative_mask is None:
        negative_mask = torch.ones(
            n_rows, n_neg, dtype=torch.bool, device=audio_emb.device
        )
    negative_mask = negative_mask.to(device=audio_emb.device, dtype=torch.bool)
    if negative_mask.shape != (n_rows, n_neg):
        raise ValueError(
            f"negative_mask must be [B, P] = {(n_rows, n_neg)}; "
            f"got {tuple(negative_mask.shape)}"
        )
    has_negative = negative_mask.any(dim=1)
    if not bool(has_negative.any()) and _distributed_world()[1] == 1:
        return _zero_with_graph(audio_emb, text_emb, negative_text_emb, scale)

    a = audio_emb[has_negative]
    pos = (a * text_emb[has_negative]).sum(dim=-1, keepdim=True)  # [R, 1]
    neg = torch.einsum("rd,rpd->rp", a, negative_text_emb[has_negative])  # [R, P]
    logits = scale * torch.cat([pos, neg], dim=1)
    # Mask after scaling: -inf * scale would give the scale a NaN gradient (0 * -inf).
    valid = torch.cat([torch.ones_like(pos, dtype=torch.bool),
                       negative_mask[has_negative]], dim=1)
    logits = logits.masked_fill(~valid, float("-inf"))
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return global_mean_cross_entropy(logits, targets)


def embed_negatives(encode, negatives, like):
    """Embeds each scene's hard-negative captions into the padded form of :func:`scl_loss`.

    Arguments
    ---------
    encode : callable
        ``list of str -> [N, D]`` unit-norm embeddings (a text tower).
    negatives : list of list of str
        Per scene, its negative captions (possibly none).
    like : torch.Tensor
        ``[B, D]``: the batch size, size, device and dtype of the result.

    Returns
    -------
    negative_emb : torch.Tensor
        ``[B, P, D]`` with ``P`` the most negatives of a scene (at least 1), zero-padded.
    mask : torch.Tensor
        ``[B, P]`` bool, True where ``negative_emb`` is a real negative.

    Example
    -------
    >>> encode = lambda captions: torch.eye(2)[[len(c) % 2 for c in captions]]
    >>> emb, mask = embed_negatives(encode, [["ab", "c"], []], torch.zeros(2, 2))
    >>> emb.shape, mask.tolist()
    (torch.Size([2, 2, 2]), [[True, True], [False, False]])
    """
    flat = [caption for captions in negatives for caption in captions]
    embedded = encode(flat) if flat else None
    return pad_negatives(embedded, [len(captions) for captions in negatives], like)


def pad_negatives(embedded, counts, like):
    """Lays out the embeddings of every scene's negatives, scene after scene, in the
    padded form of :func:`scl_loss`.

    Arguments
    ---------
    embedded : torch.Tensor or None
        ``[sum(counts), D]``: the negatives of scene 0, then of scene 1, ... (None when
        there are none).
    counts : list of int
        Negatives per scene.
    like : torch.Tensor
        ``[B, D]``: the batch size, size, device and dtype of the result.

    Returns
    -------
    negative_emb : torch.Tensor
        ``[B, P, D]`` with ``P = max(counts)`` (at least 1), zero-padded.
    mask : torch.Tensor
        ``[B, P]`` bool, True where ``negative_emb`` is a real negative.

    Example
    -------
    >>> emb, mask = pad_negatives(torch.ones(3, 2), [1, 0, 2], torch.zeros(3, 2))
    >>> emb.shape, mask.tolist()
    (torch.Size([3, 2, 2]), [[True, False], [False, False], [True, True]])
    """
    width = max(list(counts) + [1])
    negative_emb = like.new_zeros(len(counts), width, like.shape[1])
    mask = torch.zeros(len(counts), width, dtype=torch.bool, device=like.device)
    if not sum(counts):
        return negative_emb, mask
    rows = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    columns = torch.cat([torch.arange(count) for count in counts])
    rows, columns = rows.to(like.device), columns.to(like.device)
    negative_emb[rows, columns] = embedded.to(like.dtype)
    mask[rows, columns] = True
    return negative_emb, mask


def prompt_classification_loss(
    audio_emb, prompt_emb, targets, logit_scale, ignore_index=-1
):
    """Cross-entropy of audio embeddings against a fixed set of prompt embeddings.

    Logits are ``scale * audio_emb @ prompt_emb.T`` (``[B, Z]``); rows whose target is
    ``ignore_index`` are excluded from the mean. When every row is ignored the result
    is a zero that still belongs to the graph. Used to train zero-shot direction
    classification from direction-only prompts ("a sound on the left").

    Arguments
    ---------
    audio_emb : torch.Tensor
        ``[B, D]`` L2-normalised audio embeddings.
    prompt_emb : torch.Tensor
        ``[Z, D]`` L2-normalised prompt embeddings, one per class.
    targets : torch.Tensor
        ``[B]`` integer class index in ``[0, Z)`` or ``ignore_index``.
    logit_scale : torch.Tensor or float
        The already-exponentiated temperature scale.
    ignore_index : int
        Target value of rows to leave out (default -1).

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> loss = prompt_classification_loss(a, prompts, torch.tensor([0, -1]), 1.0)
    >>> round(loss.item(), 4)  # -log(e / (e + 1)), second row ignored
    0.3133
    """
    scale = _as_scale(logit_scale, audio_emb)
    targets = torch.as_tensor(targets, device=audio_emb.device).long()
    if targets.shape != (audio_emb.shape[0],):
        raise ValueError(
            f"targets must be [B] = [{audio_emb.shape[0]}]; got {tuple(targets.shape)}"
        )
    valid = targets != ignore_index
    if not bool(valid.any()) and _distributed_world()[1] == 1:
        return _zero_with_graph(audio_emb, prompt_emb, scale)
    n_classes = prompt_emb.shape[0]
    bad = targets[valid]
    if bool(((bad < 0) | (bad >= n_classes)).any()):
        raise ValueError(
            f"targets must lie in [0, {n_classes}) or equal ignore_index="
            f"{ignore_index}; got {targets.tolist()}"
        )
    logits = scale * audio_emb[valid] @ prompt_emb.t()
    return global_mean_cross_entropy(logits, targets[valid])


def check_finite(loss, context=None):
    """Raises ``FloatingPointError`` when ``loss`` is NaN or infinite.

    SpeechBrain silently drops a non-finite loss from its running average; call this
    where the loss is computed so a diverging run stops with a message that says where.

    Arguments
    ---------
    loss : torch.Tensor or float
        The loss (any shape; every element is checked).
    context : str, sequence or None
        What to name in the message, typically the batch ids (a list of ids is joined).

    Returns
    -------
    torch.Tensor or float
        ``loss`` unchanged, so the call can be chained.

    Raises
    ------
    FloatingPointError
        Naming the context, the value, and what to try.

    Example
    -------
    >>> check_finite(torch.tensor(0.5), ["scene_1"]).item()
    0.5
    >>> check_finite(torch.tensor(float("nan")), ["scene_1", "scene_2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FloatingPointError: Non-finite loss (nan) in batch scene_1, scene_2. ...
    """
    if torch.is_tensor(loss):
        finite = bool(torch.isfinite(loss.detach()).all())
        value = loss.detach().flatten()[:4].tolist() if loss.numel() > 1 else loss.item()
    else:
        finite = math.isfinite(float(loss))
        value = float(loss)
    if finite:
        return loss
    if context is None:
        where = "an unnamed batch"
    elif isinstance(context, str):
        where = context
    else:
        try:
            items = list(context)
        except TypeError:
            items = [context]
        shown = ", ".join(str(c) for c in items[:10])
        if len(items) > 10:
            shown += f", ... ({len(items)} in all)"
        where = f"batch {shown}"
    raise FloatingPointError(
        f"Non-finite loss ({value}) in {where}. Training has diverged or an input is "
        "broken: try lowering the learning rate (or enabling gradient clipping / "
        "lowering the initial logit scale), and check these inputs for silent, "
        "NaN or infinite audio and empty captions."
    )
