#!/usr/bin/env python3
"""Cost of text queries: captions per second through SpatialCLAP.encode_text.

    python benchmarks/text_queries.py --model recipes/SpatialCLAP/results/spatial_clap/1234/model \
        --manifest recipes/SpatialCLAP/data/generated/manifests/test_3src_heldout.json

Encodes every caption of a manifest twice with an exported model: first with an empty
cache of the frozen text encoder's token states ("cold": every piece of text through
MiniLM), then again ("cached"). Also reports how many distinct clauses and pieces (the
texts MiniLM reads) the captions hold.
"""
import argparse
import json
import os
import tempfile
import time

import torch

from spatial_clap_sb.data.captions import caption_clause_pieces
from spatial_clap_sb.inference import SpatialCLAP


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--manifest", required=True, help="a manifest with captions")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.manifest, encoding="utf-8") as f:
        captions = [c for entry in json.load(f).values() for c in entry["captions"]]
    with tempfile.TemporaryDirectory() as folder:
        model = SpatialCLAP.from_hparams(source=args.model,
                                         savedir=os.path.join(folder, "model"))
        clauses = [tuple(p) for c in captions
                   for p in caption_clause_pieces(c, model.zones)]
        pieces = {p.lower() for clause in clauses for p in clause}
        cold = timed(lambda: model.encode_text(captions))
        cached = timed(lambda: model.encode_text(captions))
    print(f"{len(captions)} captions, {len(set(clauses))} distinct clauses, "
          f"{len(pieces)} distinct pieces ({args.threads} threads)")
    print(f"cold cache: {len(captions) / cold:.0f} captions/s; "
          f"cached: {len(captions) / cached:.0f} captions/s")


if __name__ == "__main__":
    main()
