"""Several processes give the same training as one: every loss term of the objective,
computed by two gloo processes on halves of a batch, gives after DDP's gradient
averaging the loss and gradients of one process on the whole batch.

The halves hold different numbers of the rows each term counts (two-source rows for
SCL and text consistency, one-source rows for the direction prompts, labelled sources
for the source-zone read-out), which is where a per-rank mean would go wrong.
"""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from spatial_clap_sb.language import ZoneVocabulary
from spatial_clap_sb.models.source_zone import SourceZoneHead
from spatial_clap_sb.objective import TERMS, SpatialCLAPObjective

WORLD = 2
B, D, P, Z = 8, 16, 2, 5
WITH_NEGATIVES = [0, 1, 2, 5]          # two-source rows: 3 on rank 0, 1 on rank 1
USABLE_PARAPHRASE = [0, 2, 5]
ZONE_OF_ROW = [-1, -1, -1, 3, 0, -1, 4, 1]   # one-source rows: 1 on rank 0, 3 on rank 1
LABELLED = [(0, 0, 2), (1, 1, 0), (3, 2, 3), (3, 0, 1), (6, 1, 4)]  # (row, class, zone)
PER_ROW = ("audio", "text", "negatives", "anchors")
SHARED = ("prompts", "log_scale")


def global_batch():
    """The same leaves in every process (seeded)."""
    generator = torch.Generator().manual_seed(0)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=generator), dim=-1)

    leaves = {"audio": unit(B, D), "text": unit(B, D), "negatives": unit(B, P, D),
              "anchors": unit(B, D), "prompts": unit(Z, D),
              "log_scale": torch.tensor(2.0)}
    for leaf in leaves.values():
        leaf.requires_grad_(True)
    torch.manual_seed(0)
    head = SourceZoneHead(["dog", "bell", "rain"], ZoneVocabulary.default().names, D)
    return leaves, head


def objective(leaves, head, rows):
    """The recipe's objective (its terms and default weights) on the rows ``rows``."""
    recipe = SpatialCLAPObjective(ZoneVocabulary.default(), scl_weight=1.0,
                                  text_consistency_weight=3.0, direction_weight=1.0,
                                  source_zone_weight=3.0, source_zone_on_text=True,
                                  content_weight=1.0)
    recipe.source_zone_head = head
    rows = torch.as_tensor(rows)
    has_negatives = torch.tensor([int(r) in WITH_NEGATIVES for r in rows])
    sources = [[{"label": head.labels[c], "zone": head.zone_names[z]}
                for r, c, z in LABELLED if r == int(row)] for row in rows]
    terms = recipe.terms(
        leaves["audio"][rows], leaves["text"][rows], leaves["log_scale"].exp(),
        negatives=leaves["negatives"][rows], mask=has_negatives[:, None].expand(-1, P),
        paraphrases=leaves["anchors"][rows],
        usable=torch.tensor([int(r) in USABLE_PARAPHRASE for r in rows]),
        prompts=leaves["prompts"],
        zone_index=torch.tensor([ZONE_OF_ROW[int(r)] for r in rows]), sources=sources,
        content=(leaves["negatives"][rows].flip(1), has_negatives[:, None].expand(-1, P)))
    assert sorted(terms) == sorted(TERMS)  # every term takes part
    return recipe.total(terms)


def gradients(leaves, head):
    out = {name: leaf.grad.clone() for name, leaf in leaves.items()}
    out.update({f"head.{n}": p.grad.clone() for n, p in head.named_parameters()})
    return out


def _rank(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    leaves, head = global_batch()
    loss = objective(leaves, head, range(rank * B // WORLD, (rank + 1) * B // WORLD))
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": gradients(leaves, head)},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")
def test_two_processes_give_the_loss_and_gradients_of_one(tmp_path):
    leaves, head = global_batch()
    loss = objective(leaves, head, range(B))
    loss.backward()
    reference = gradients(leaves, head)

    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
             for r in range(WORLD)]
    # The ranks' losses average to the one-process loss ...
    assert torch.stack([r["loss"] for r in ranks]).mean() == pytest.approx(
        loss.item(), abs=1e-5)
    # ... and what DDP computes from their gradients is the one-process gradient:
    # parameters (shared leaves, the head) average over ranks; each rank's own rows
    # carry W times their share (see spatial_clap_sb.losses).
    for name, expected in reference.items():
        per_rank = torch.stack([r["grads"][name] for r in ranks])
        combined = per_rank.sum(0) / WORLD if name in PER_ROW else per_rank.mean(0)
        assert torch.allclose(combined, expected, atol=1e-5), name
    assert set(reference) > set(PER_ROW) | set(SHARED)
