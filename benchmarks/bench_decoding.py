"""Decoding alone: one thread against ``camlens.scale.processes.decoded_batches`` with 2, 4, 8
and 15 worker processes (the model loaded, on the GPU where there is one, and never called).

Shows whether decoding can keep up with a model: the pipeline on a GPU is as fast as its
decoding. Reads the pictures ``bench_pipeline.py`` writes into its ``--work`` folder::

    python benchmarks/bench_pipeline.py --parts speed --device cuda --work /tmp/bw ...
    python benchmarks/bench_decoding.py --work /tmp/bw

For each count: the time to fork the workers, to the first batch, and images per second in
all and after the first batch.
"""

from __future__ import annotations

import argparse
import time
import warnings
from functools import partial
from pathlib import Path

import torch

from camlens.models import load_model
from camlens.scale.processes import decoded_batches
from camlens.scale.sources import read_inputs
from camlens.scale.work import WorkSpec, decode_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="bench_pipeline.py's --work folder (gray64/, rgb224/ and "
                             "resnet18.safetensors)")
    parser.add_argument("--images", type=int, default=4096, help="at most this many per model")
    options = parser.parse_args()
    warnings.simplefilter("ignore")
    models = (("digits-gap", options.work / "gray64", 64, lambda: load_model("digits-gap")),
              ("resnet18", options.work / "rgb224", 16,
               lambda: load_model(str(options.work / "resnet18.safetensors"),
                                  arch="torchvision:resnet18")))
    for name, folder, batch, load in models:
        loaded = load()
        if torch.cuda.is_available():
            loaded.model.cuda()
            torch.zeros(1, device="cuda")
        items = read_inputs([folder])[:options.images]
        decode = partial(decode_input, loaded, WorkSpec())
        began = time.perf_counter()
        count = sum(len([decode(item) for item in items[first:first + batch]])
                    for first in range(0, len(items), batch))
        print(f"{name}: one thread: {count / (time.perf_counter() - began):.0f} img/s "
              f"({count} images)", flush=True)
        for processes in (2, 4, 8, 15):
            began = time.perf_counter()
            batches = decoded_batches(items, decode, batch, processes)
            forked = time.perf_counter()
            first = next(batches)
            arrived = time.perf_counter()
            count = len(first) + sum(len(rest) for rest in batches)
            ended = time.perf_counter()
            print(f"{name}: processes={processes}: fork {1e3 * (forked - began):.0f} ms, first "
                  f"batch {1e3 * (arrived - forked):.0f} ms, {count / (ended - began):.0f} img/s "
                  f"in all, {count / (ended - arrived):.0f} img/s after the first batch",
                  flush=True)


if __name__ == "__main__":
    main()
