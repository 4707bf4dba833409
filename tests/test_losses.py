"""Tests of spatial_clap_sb.losses, including a 2-process (gloo, CPU) DDP check."""
import datetime
import math
import os
import random
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from spatial_clap_sb.losses import (
    check_finite,
    clap_loss,
    embed_negatives,
    gather_with_grad,
    prompt_classification_loss,
    scl_loss,
)


def _ce(logits, target):
    """Hand cross-entropy of one row (python floats)."""
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def _dot(u, v):
    return sum(float(x) * float(y) for x, y in zip(u, v))


# --------------------------------------------------------------------------- clap_loss


def test_clap_loss_matches_hand_computation_3x3():
    gen = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(3, 4, generator=gen, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(3, 4, generator=gen, dtype=torch.float64), dim=-1)
    scale = 7.5
    sim = [[scale * _dot(audio[i], text[j]) for j in range(3)] for i in range(3)]
    a2t = sum(_ce(sim[i], i) for i in range(3)) / 3
    t2a = sum(_ce([sim[j][i] for j in range(3)], i) for i in range(3)) / 3
    expected = 0.5 * (a2t + t2a)
    got = clap_loss(audio, text, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, abs=1e-10)
    # a float scale and gather=False (not distributed) give the same value
    assert clap_loss(audio, text, scale, gather=False).item() == pytest.approx(
        expected, abs=1e-10
    )


def test_clap_loss_lower_for_aligned_than_shuffled():
    gen = torch.Generator().manual_seed(1)
    audio = F.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    text = F.normalize(audio + 0.1 * torch.randn(8, 16, generator=gen), dim=-1)
    scale = torch.tensor(20.0)
    aligned = clap_loss(audio, text, scale)
    shuffled = clap_loss(audio, text.roll(3, dims=0), scale)
    assert torch.isfinite(aligned) and torch.isfinite(shuffled)
    assert aligned < shuffled
    assert aligned < math.log(8) < shuffled


def test_clap_loss_gradients_reach_embeddings_and_scale():
    gen = torch.Generator().manual_seed(2)
    audio = F.normalize(torch.randn(4, 6, generator=gen), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(4, 6, generator=gen), dim=-1).requires_grad_()
    log_scale = torch.tensor(math.log(10.0), requires_grad=True)
    clap_loss(audio, text, log_scale.exp()).backward()
    for grad in (audio.grad, text.grad, log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all()
    assert audio.grad.abs().sum() > 0 and log_scale.grad.abs() > 0


def test_clap_loss_rejects_unpaired_shapes():
    with pytest.raises(ValueError, match="paired"):
        clap_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0)


def test_gather_with_grad_is_identity_without_distributed():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x


# --------------------------------------------------------------------------- scl_loss


def _unit(*values):
    return F.normalize(torch.tensor(values, dtype=torch.float64), dim=-1)


def test_scl_loss_two_source_row_matches_hand_ce():
    audio = _unit(1.0, 0.2, 0.0)[None]
    text = _unit(0.9, 0.3, 0.1)[None]
    negative = _unit(0.2, 1.0, 0.3)[None, None]
    scale = 5.0
    logits = [scale * _dot(audio[0], text[0]), scale * _dot(audio[0], negative[0, 0])]
    got = scl_loss(audio, text, negative, torch.tensor([[True]]), scale)
    assert got.item() == pytest.approx(_ce(logits, 0), abs=1e-10)


def test_scl_loss_ignores_masked_entries_and_rows_without_negatives():
    gen = torch.Generator().manual_seed(3)
    audio = F.normalize(torch.randn(3, 5, generator=gen, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(3, 5, generator=gen, dtype=torch.float64), dim=-1)
    neg = F.normalize(torch.randn(3, 2, 5, generator=gen, dtype=torch.float64), dim=-1)
    # row 0: two negatives; row 1: one (second is padding); row 2: single source
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    scale = 4.0
    rows = []
    for i, n_valid in ((0, 2), (1, 1)):
        logits = [scale * _dot(audio[i], text[i])]
        logits += [scale * _dot(audio[i], neg[i, p]) for p in range(n_valid)]
        rows.append(_ce(logits, 0))
    expected = sum(rows) / 2  # mean over the rows that have negatives
    got = scl_loss(audio, text, neg, mask, scale)
    assert got.item() == pytest.approx(expected, abs=1e-10)

    # changing masked entries / the row without negatives changes nothing
    neg2, audio2, text2 = neg.clone(), audio.clone(), text.clone()
    neg2[1, 1] = -neg2[1, 1]
    neg2[2] = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    audio2[2] = -audio2[2]
    text2[2] = -text2[2]
    assert scl_loss(audio2, text2, neg2, mask, scale).item() == pytest.approx(
        expected, abs=1e-10
    )


def test_scl_loss_gradient_pushes_permuted_caption_away():
    audio = _unit(1.0, 0.0, 0.2)[None].requires_grad_()
    text = _unit(0.8, 0.5, 0.0)[None].requires_grad_()
    neg = torch.stack([_unit(0.7, -0.6, 0.1), _unit(0.0, 0.0, 1.0)])[None]
    neg.requires_grad_()
    mask = torch.tensor([[True, False]])
    loss = scl_loss(audio, text, neg, mask, torch.tensor(10.0, dtype=torch.float64))
    loss.backward()
    for grad in (audio.grad, text.grad, neg.grad):
        assert torch.isfinite(grad).all()
    # descending the loss lowers the negative's similarity and raises the positive's
    assert torch.dot(neg.grad[0, 0], audio[0].detach()) > 0
    assert torch.dot(text.grad[0], audio[0].detach()) < 0
    assert torch.all(neg.grad[0, 1] == 0)  # masked entry gets no gradient
    with torch.no_grad():
        stepped = F.normalize(neg - 0.1 * neg.grad, dim=-1)
        before = torch.dot(audio[0], neg[0, 0])
        after = torch.dot(audio[0], stepped[0, 0])
    assert after < before


def test_scl_loss_without_negatives_is_zero_with_graph():
    audio = torch.randn(2, 3, requires_grad=True)
    text = torch.randn(2, 3, requires_grad=True)
    log_scale = torch.tensor(1.0, requires_grad=True)
    for neg, mask in (
        (torch.randn(2, 2, 3), torch.zeros(2, 2, dtype=torch.bool)),
        (torch.randn(2, 0, 3), torch.zeros(2, 0, dtype=torch.bool)),
    ):
        loss = scl_loss(audio, text, neg, mask, log_scale.exp())
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.all(audio.grad == 0) and torch.all(log_scale.grad == 0)


# ------------------------------------------------------------ prompt_classification_loss


def test_prompt_classification_loss_with_ignore_index():
    audio = torch.stack([_unit(1.0, 0.1), _unit(0.3, 1.0), _unit(-1.0, 0.2)])
    prompts = torch.stack([_unit(1.0, 0.0), _unit(0.0, 1.0), _unit(-1.0, 0.0)])
    targets = torch.tensor([0, -1, 1])
    scale = 3.0
    rows = []
    for i in (0, 2):
        logits = [scale * _dot(audio[i], prompts[z]) for z in range(3)]
        rows.append(_ce(logits, int(targets[i])))
    got = prompt_classification_loss(audio, prompts, targets, scale)
    assert got.item() == pytest.approx(sum(rows) / 2, abs=1e-10)
    # another ignore value
    targets_99 = torch.tensor([0, 99, 1])
    got_99 = prompt_classification_loss(audio, prompts, targets_99, scale, ignore_index=99)
    assert got_99.item() == pytest.approx(sum(rows) / 2, abs=1e-10)


def test_prompt_classification_loss_all_ignored_and_bad_targets():
    audio = torch.randn(2, 3, requires_grad=True)
    prompts = torch.randn(4, 3)
    loss = prompt_classification_loss(audio, prompts, torch.tensor([-1, -1]), 2.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(audio.grad == 0)
    with pytest.raises(ValueError, match="targets"):
        prompt_classification_loss(audio, prompts, torch.tensor([0, 4]), 2.0)


# ------------------------------------------------------------------------- check_finite


def test_check_finite_passes_and_raises_with_context():
    loss = torch.tensor(1.5)
    assert check_finite(loss, ["a"]) is loss
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(FloatingPointError) as info:
            check_finite(torch.tensor(bad), ["scene_007", "scene_042"])
        message = str(info.value)
        assert "scene_007" in message and "scene_042" in message
        assert "learning rate" in message and "inputs" in message
    with pytest.raises(FloatingPointError, match="epoch 3 batch 12"):
        check_finite(float("nan"), "epoch 3 batch 12")


# ------------------------------------------------------------------ DDP (2 processes)

_DDP_TIMEOUT_S = 90
_SPLITS = ((3, 5), (4, 4))  # unequal, then equal per-rank batch sizes


def _global_problem():
    """A fixed global batch and replicated 'parameters' (float64 for tight checks)."""
    gen = torch.Generator().manual_seed(1234)
    n = sum(_SPLITS[0])
    return {
        "x_audio": torch.randn(n, 6, generator=gen, dtype=torch.float64),
        "x_text": torch.randn(n, 5, generator=gen, dtype=torch.float64),
        "w_audio": torch.randn(6, 4, generator=gen, dtype=torch.float64),
        "w_text": torch.randn(5, 4, generator=gen, dtype=torch.float64),
        "log_scale": torch.tensor(math.log(8.0), dtype=torch.float64),
    }


def _run_step(problem, rows):
    """Forward + backward of clap_loss on ``rows``; returns loss and gradients."""
    w_audio = problem["w_audio"].clone().requires_grad_()
    w_text = problem["w_text"].clone().requires_grad_()
    log_scale = problem["log_scale"].clone().requires_grad_()
    audio = F.normalize(problem["x_audio"][rows] @ w_audio, dim=-1)
    text = F.normalize(problem["x_text"][rows] @ w_text, dim=-1)
    audio.retain_grad()
    text.retain_grad()
    loss = clap_loss(audio, text, log_scale.exp(), gather=True)
    loss.backward()
    return {
        "loss": loss.detach(),
        "audio_grad": audio.grad,
        "text_grad": text.grad,
        "w_audio_grad": w_audio.grad,
        "w_text_grad": w_text.grad,
        "log_scale_grad": log_scale.grad,
    }


def _ddp_worker(rank, world_size, init_file, out_dir):
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=_DDP_TIMEOUT_S),
    )
    try:
        torch.set_num_threads(1)
        problem = _global_problem()
        results = []
        for split in _SPLITS:
            start = sum(split[:rank])
            rows = slice(start, start + split[rank])
            # the gather itself returns the global batch in rank order
            gathered = gather_with_grad(problem["x_audio"][rows])
            assert torch.equal(gathered, problem["x_audio"])
            out = _run_step(problem, rows)
            # what DDP does to replicated parameters: all_reduce, then average
            for key in ("w_audio_grad", "w_text_grad", "log_scale_grad"):
                dist.all_reduce(out[key], op=dist.ReduceOp.SUM)
                out[key] /= world_size
            out["rows"] = (rows.start, rows.stop)
            results.append(out)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_clap_loss_ddp_gather_matches_single_process(tmp_path):
    world_size = 2
    init_file = tmp_path / "ddp_init"
    context = mp.start_processes(
        _ddp_worker,
        args=(world_size, str(init_file), str(tmp_path)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + _DDP_TIMEOUT_S
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"DDP workers did not finish within {_DDP_TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)

    problem = _global_problem()
    single = _run_step(problem, slice(None))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    for split_index in range(len(_SPLITS)):
        for r in range(world_size):
            out = ranks[r][split_index]
            start, stop = out["rows"]
            # every rank reports the loss of the global batch
            torch.testing.assert_close(out["loss"], single["loss"], atol=1e-6, rtol=0)
            # local embedding gradients are world_size x the global-loss gradient
            # (DDP's averaging of parameter gradients divides by world_size)
            for key in ("audio_grad", "text_grad"):
                torch.testing.assert_close(
                    out[key] / world_size, single[key][start:stop], atol=1e-6, rtol=0
                )
            # DDP-averaged gradients of replicated parameters, including the scale
            for key in ("w_audio_grad", "w_text_grad", "log_scale_grad"):
                torch.testing.assert_close(out[key], single[key], atol=1e-6, rtol=0)


def test_scl_loss_with_padded_negatives_gives_finite_scale_gradient():
    """Rows with fewer negatives than others are padded; the padding must not turn the
    logit scale's gradient into NaN (regression: -inf was multiplied by the scale)."""
    torch.manual_seed(0)
    audio = F.normalize(torch.randn(3, 8), dim=-1)
    text = F.normalize(torch.randn(3, 8), dim=-1)
    negatives = F.normalize(torch.randn(3, 4, 8), dim=-1)
    mask = torch.tensor([[True, True, True, True], [True, False, False, False],
                         [False, False, False, False]])
    scale = torch.tensor(14.0, requires_grad=True)
    scl_loss(audio, text, negatives, mask, scale).backward()
    assert torch.isfinite(scale.grad)


def test_text_consistency_separates_a_caption_from_its_permuted_twin():
    """The text side of SCL (the objective's text_consistency term):
    trained on it alone, the text tower pulls a scene's phrasings together and pushes
    its permuted-assignment captions away, for scenes it has not been trained on."""
    from spatial_clap_sb.language import N_PHRASINGS, compose_caption, permuted_captions
    from spatial_clap_sb.models.fusion import ProjectionHead
    from spatial_clap_sb.models.spatial_clap import TextTower
    from spatial_clap_sb.models.text import TextEncoder, pooled_size
    from spatial_clap_sb.objective import pick_paraphrases

    torch.manual_seed(0)
    rng = random.Random(0)
    sounds = ["a dog barks", "a bell rings", "rain falls", "a car passes", "a baby cries",
              "water drips", "a phone rings", "birds sing"]
    zones = ["left", "front-left", "front", "front-right", "right"]

    def scenes(pairs):
        out = []
        for first, second in pairs:
            placed = rng.sample(zones, 2)
            out.append([{"caption": first, "zone": placed[0]},
                        {"caption": second, "zone": placed[1]}])
        return out

    pairs = [(a, b) for i, a in enumerate(sounds) for b in sounds[i + 1:]]
    rng.shuffle(pairs)
    train, held_out = scenes(pairs[:22] * 3), scenes(pairs[22:])
    tower = TextTower(TextEncoder(pooling_queries=2),
                      ProjectionHead(pooled_size(384, 2), 64))
    optimizer = torch.optim.AdamW(tower.parameters(), lr=1e-3)

    def separation(sources_list):
        with torch.no_grad():
            true = tower([compose_caption(s) for s in sources_list])
            swapped = tower([permuted_captions(s)[0] for s in sources_list])
        return (true * swapped).sum(-1).mean().item()

    before = separation(held_out)
    for _ in range(60):
        batch = rng.sample(train, 16)
        phrasing = [rng.randrange(N_PHRASINGS) for _ in batch]
        captions = [compose_caption(s, p) for s, p in zip(batch, phrasing)]
        every = [[compose_caption(s, q) for q in range(N_PHRASINGS)] for s in batch]
        paraphrases, usable = pick_paraphrases(captions, every, rng)
        assert all(usable)
        negatives = tower([permuted_captions(s, p)[0] for s, p in zip(batch, phrasing)])
        loss = scl_loss(tower(paraphrases), tower(captions), negatives[:, None], None, 10.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = separation(held_out)
    assert before > 0.9          # order-blind at the start
    assert after < before - 0.1  # and no longer after training on other scenes


def test_embed_negatives_pads_each_scene_and_keeps_the_gradient():
    table = torch.nn.Parameter(torch.randn(4, 3))
    captions = ["a", "b", "c", "d"]

    def encode(batch):
        return table[[captions.index(c) for c in batch]]

    like = torch.zeros(3, 3)
    emb, mask = embed_negatives(encode, [["b"], [], ["d", "a", "c"]], like)
    assert emb.shape == (3, 3, 3)
    assert mask.tolist() == [[True, False, False], [False] * 3, [True] * 3]
    assert torch.equal(emb[0, 0], table[1]) and torch.equal(emb[2], table[[3, 0, 2]])
    assert not emb[~mask].any()  # padding is zero
    emb.sum().backward()
    assert table.grad.tolist() == torch.ones(4, 3).tolist()


def test_embed_negatives_without_any_negative():
    emb, mask = embed_negatives(lambda batch: pytest.fail("nothing to encode"),
                                [[], []], torch.zeros(2, 5))
    assert emb.shape == (2, 1, 5) and not mask.any()
