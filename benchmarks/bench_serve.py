"""How fast is ``camlens serve`` next to the bare library call, and does it stay right under load?

Serves one model (``camlens serve``'s app on uvicorn, in this process, on 127.0.0.1 only):
digits-gap by default (one 64x64 picture, Grad-CAM at ``features``), or with ``--model
resnet18`` torchvision's resnet18 (random weights; one 224x224 JPEG, Grad-CAM at ``layer4``).
Sends ``POST /api/explain`` (top-1, JSON with the input and overlay PNGs, hover values and raw
map) from client processes, one thread and one HTTP connection per client:

1. the bare library for the same work on one worker thread, as the server runs it:
   ``camlens.explain`` alone, and ``explain`` + overlay + PNG encoding (what the server adds per
   map), as latency and calls/s (on a busy machine, torch's OpenMP team on the main thread can
   be many times slower than the same call on a worker thread);
2. the cost bar in pairs: within each round, the library call plus its overlay PNG (from the
   tensor, and from the uploaded bytes) and one request's own time on the server
   (``Server-Timing``), with and without the input picture;
3. 1, 4 and 16 concurrent clients for ``--seconds`` each: latency (median, 95th percentile),
   answers/s and CPU per answer; the 16 clients again with the micro-batcher off
   (``batch_window_s=0``);
4. the soak: 16 clients for ``--soak`` seconds (30 by default): no error, every answer's class,
   score and raw map equal to the library's for that picture (raw maps within float32
   rounding, rtol 1e-4: batched calls sum in another order), and the model untouched at the
   end (weights, buffers, eval mode, no hooks, no gradients).

Run it alone (it measures a shared machine): ``python benchmarks/bench_serve.py --output
benchmarks/SERVE.md`` and ``python benchmarks/bench_serve.py --model resnet18 --output
benchmarks/SERVE_RESNET18.md``; ``--quick`` for a smoke run (1 s phases); ``--device cuda``
on a GPU. Exit status 1 when the
soak finds an error, a wrong answer or a changed model.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

PICTURES = 6


@dataclass
class Work:
    """The served model a run measures: its catalog, name, the layer explained, the pictures
    sent (encoded bytes and their type) and how to load it afresh (to check it is untouched)."""

    catalog: Any
    name: str
    layer: str
    pictures: list[bytes]
    mime: str
    fresh: Callable[[], torch.nn.Module]
    described: str
    serve_args: tuple[str, ...] = ()  # `camlens serve`'s options that serve the same model

    @property
    def loaded(self):
        return self.catalog.models[self.name].loaded

    @property
    def device(self) -> torch.device:
        return self.catalog.models[self.name].device


def sample_pictures() -> list[bytes]:
    """The explorer's sample digits as PNG bytes."""
    from camlens.serve.samples import SampleShelf

    return [sample.data for sample in SampleShelf().pictures()
            if sample.extra.get("for") == "image"][:PICTURES]


def digits_work(device: str = "cpu") -> Work:
    from camlens.serve import ModelCatalog
    from camlens.zoo import load as load_zoo

    return Work(ModelCatalog.load(["digits-gap"], zoo=False, device=device), "digits-gap",
                "features",
                sample_pictures(), "image/png", lambda: load_zoo("digits-gap"),
                "one 64x64 digit (six pictures in turn), digits-gap, Grad-CAM at `features`",
                ("-m", "digits-gap"))


def resnet18_work(folder: Path, device: str = "cpu") -> Work:
    """torchvision's resnet18 (random weights from a seed, as ``bench_pipeline.py``) and six
    224x224 JPEGs of blobs on noise."""
    from bench_pipeline import make_images, resnet18_weights

    from camlens.models import load_model
    from camlens.serve import ModelCatalog

    folder.mkdir(parents=True, exist_ok=True)
    weights = resnet18_weights(folder)
    pictures = make_images(folder / "rgb224", PICTURES, 224, "RGB", ".jpg")
    catalog = ModelCatalog.load(["torchvision:resnet18"], [str(weights)], zoo=False,
                                device=device)
    (name,) = catalog.models
    return Work(catalog, name, "layer4", [path.read_bytes() for path in sorted(
        pictures.iterdir())][:PICTURES], "image/jpeg",
        lambda: load_model("torchvision:resnet18", weights=str(weights)).model,
        "one 224x224 JPEG (six in turn), torchvision's resnet18 (random weights), Grad-CAM "
        "at `layer4`", ("-m", "torchvision:resnet18", "--weights", str(weights)))


def client_process(url: str, clients: int, seconds: float, pictures: list[bytes],
                   results, model: str = "digits-gap", layer: str = "features",
                   mime: str = "image/png") -> None:
    """``clients`` threads, each posting pictures in turn for ``seconds``; puts one list of
    (picture index, latency s, status, JSON or error text) per thread on ``results``."""
    import httpx

    start_at = time.monotonic() + 0.5  # every thread starts together

    def one_client(number: int) -> None:
        answers = []
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < start_at:
                time.sleep(0.001)
            end_at = start_at + seconds
            index = number
            while time.monotonic() < end_at:
                picture = index % len(pictures)
                began = time.perf_counter()
                response = http.post("/api/explain", data={
                    "model": model, "method": "gradcam", "layer": layer,
                    "target": "top1"}, files=[("image", ("picture", pictures[picture],
                                                         mime))])
                latency = time.perf_counter() - began
                body = response.json() if response.status_code == 200 else response.text
                answers.append((picture, latency, response.status_code, body,
                                response.headers.get("server-timing", "")))
                index += 1
        results.put(answers)

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def load(url: str, clients: int, seconds: float, pictures: list[bytes],
         work: Work) -> list[tuple]:
    """Every answer of ``clients`` concurrent clients over ``seconds``, from a child process."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=client_process,
                              args=(url, clients, seconds, pictures, results, work.name,
                                    work.layer, work.mime))
    process.start()
    answers = []
    for _ in range(clients):
        answers.extend(results.get(timeout=seconds + 300))
    process.join(timeout=60)
    return answers


def summary(answers: list[tuple], seconds: float) -> dict[str, float]:
    latencies = sorted(latency for _, latency, status, *_ in answers if status == 200)
    errors = sum(1 for _, _, status, *_ in answers if status != 200)
    return {"answers": len(answers), "errors": errors,
            "per_s": len(latencies) / seconds,
            "median_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies
            else float("nan")}


def server_phases(answers: list[tuple]) -> dict[str, float]:
    """Median milliseconds of each ``Server-Timing`` entry over the successful answers."""
    from camlens.serve.timing import parse_server_timing

    timings = [parse_server_timing(header) for _, _, status, _, header in answers
               if status == 200 and header]
    return {name: statistics.median(timing[name] for timing in timings if name in timing)
            for name in (timings[0] if timings else {})}


def decoded(work: Work, data: bytes) -> torch.Tensor:
    """The model's input for uploaded picture bytes, as the server reads and preprocesses it."""
    from camlens.serve import Limits
    from camlens.serve.uploads import Upload, read_picture

    return work.loaded.preprocess(read_picture(Upload("picture", data), Limits()))


def explained_overlay(work: Work, source: torch.Tensor | bytes, threads: int | None = None):
    """The library row's work before its PNG: Grad-CAM of ``source`` (the model's input, or
    uploaded picture bytes, decoded first) at the work's layer, its map drawn over the picture;
    on ``threads`` torch threads (None: the calling thread's count)."""
    import contextlib

    import camlens
    from camlens.scale.lanes import thread_count
    from camlens.scale.work import display_image
    from camlens.viz import overlay

    with thread_count(threads) if threads is not None else contextlib.nullcontext():
        tensor = decoded(work, source) if isinstance(source, bytes) else source
        exp = camlens.explain(work.loaded.model, tensor.to(work.device), method="gradcam",
                              layer=work.layer)
        return overlay(display_image(work.loaded, tensor), exp.maps[0])


def thread_counts() -> list[int]:
    """The torch thread counts the library rows are timed on: one, and all of torch's."""
    return sorted({1, torch.get_num_threads()})


def library_threads(work: Work, inputs: list[torch.Tensor], rounds: int = 30
                    ) -> tuple[int, dict[int, float]]:
    """The library row's torch thread count, on the calling thread: explain + overlay PNG timed
    on one thread and on all of torch's, in turns within every round (the first 3 warm up);
    the count with the lower median, and the median ms of each. The library rows of the
    table (:func:`library_timing`) run on it, so the server (whose trials choose its count the
    same way) is compared with the library at its best, not at torch's default."""
    from camlens.serve.encoding import png_data_url

    counts = thread_counts()
    times: dict[int, list[float]] = {count: [] for count in counts}
    for round_ in range(rounds + 3):
        tensor = inputs[round_ % len(inputs)]
        for count in counts:
            began = time.perf_counter()
            png_data_url(explained_overlay(work, tensor, count))
            took = 1000 * (time.perf_counter() - began)
            if round_ >= 3:
                times[count].append(took)
    medians = {count: statistics.median(values) for count, values in times.items()}
    return min(medians, key=medians.__getitem__), medians


def library_timing(work: Work, inputs: list[torch.Tensor], seconds: float, threads: int
                   ) -> dict[str, dict]:
    """The bare library in one thread on ``threads`` torch threads: explain alone, and
    explain + overlay + PNG."""
    import camlens
    from camlens.scale.lanes import thread_count
    from camlens.serve.encoding import png_data_url

    model, layer = work.loaded.model, work.layer
    figures = {}
    for name, with_png in (("explain", False), ("explain + overlay PNG", True)):
        with thread_count(threads):
            for tensor in inputs:  # warm up
                camlens.explain(model, tensor.to(work.device), method="gradcam", layer=layer)
            latencies = []
            cpu_began = time.process_time()
            end_at = time.monotonic() + seconds
            index = 0
            while time.monotonic() < end_at:
                tensor = inputs[index % len(inputs)]
                began = time.perf_counter()
                if with_png:
                    png_data_url(explained_overlay(work, tensor))
                else:
                    camlens.explain(model, tensor.to(work.device), method="gradcam",
                                    layer=layer)
                    if work.device.type == "cuda":  # the PNG row waits for the map's copy
                        torch.cuda.synchronize(work.device)
                latencies.append(time.perf_counter() - began)
                index += 1
        latencies.sort()
        figures[name] = {"per_s": len(latencies) / seconds,
                         "cpu_ms": 1000 * (time.process_time() - cpu_began) / len(latencies),
                         "median_ms": 1000 * statistics.median(latencies),
                         "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))]}
    return figures


def leanest_app(answer: Callable[[bytes, int], bytes]):
    """The leanest server this stack allows, to tell the request's unavoidable cost from
    camlens's: a bare ASGI app (no framework, no middleware, no checks) that reads the body,
    takes the one file out of the multipart form with python-multipart's parser, runs
    ``answer(file bytes, threads)`` on a worker thread (``threads``: the path, ``/2``; 0 for
    the thread's own count) and sends what it returns as the answer, with its
    own time in ``Server-Timing`` measured as camlens's (from the app's call to the answer's
    start)."""
    from concurrent.futures import ThreadPoolExecutor

    from multipart.multipart import MultipartParser, parse_options_header

    worker = ThreadPoolExecutor(1)

    def the_file(content_type: bytes, body: bytes) -> bytes:
        _, options = parse_options_header(content_type)
        parts: list[tuple[bytes, list[bytes]]] = []

        def begin() -> None:
            parts.append((b"", []))

        def header_value(data: bytes, start: int, end: int) -> None:
            parts[-1] = (parts[-1][0] + data[start:end], parts[-1][1])

        def part_data(data: bytes, start: int, end: int) -> None:
            parts[-1][1].append(data[start:end])

        parser = MultipartParser(options[b"boundary"], {
            "on_part_begin": begin, "on_header_value": header_value,
            "on_part_data": part_data})
        parser.write(body)
        parser.finalize()
        return next(b"".join(data) for headers, data in parts if b"filename=" in headers)

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    worker.shutdown()
                    return
        began = time.perf_counter()
        body, more = bytearray(), True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        data = the_file(dict(scope["headers"])[b"content-type"], bytes(body))
        threads = int(scope["path"].strip("/") or 0)
        png = await asyncio.get_running_loop().run_in_executor(worker, answer, data, threads)
        took = f"total;dur={1000 * (time.perf_counter() - began):.2f}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"image/png"), (b"server-timing", took)]})
        await send({"type": "http.response.body", "body": png})

    return app


def paired_costs(url: str, work: Work, inputs: list[torch.Tensor], pictures: list[bytes],
                 rounds: int, lean_url: str) -> dict[str, Any]:
    """Median ms of one request's work, each kind measured in turn within every round so a
    shared machine's load falls on all alike: the library on a worker thread (explain + overlay
    PNG from the decoded tensor; the same from the PNG bytes, decoding and preprocessing
    included) and the server's own time (``Server-Timing`` total, one client, requests one at a
    time), with and without the input picture in the answer; the leanest server's
    (:func:`leanest_app` at ``lean_url``, doing the library's work from the bytes); and under
    "idle threads" what the server chose for a request that finds it idle (GET /api/status).

    The server picks its torch thread count per kind of work as it goes (``camlens.serve.cores``),
    so the library rows and the leanest server run on each count (one, and all of torch's) in
    every round, and each row's figure is its faster count's median ("threads" says which, and
    "by threads" has every count's)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from camlens.serve.encoding import png_data_url
    from camlens.serve.timing import parse_server_timing

    counts = thread_counts()

    def library(source: torch.Tensor | bytes, threads: int) -> None:
        png_data_url(explained_overlay(work, source, threads))

    on_counts = ("library", "library from bytes", "leanest server")
    times: dict[str, list[float]] = {name: [] for name in (
        *(f"{name}@{count}" for name in on_counts for count in counts),
        "server", "server, input left out", "server, upload left out", "server, format=png")}
    with ThreadPoolExecutor(1) as worker, httpx.Client(base_url=url, timeout=120) as http, \
            httpx.Client(base_url=lean_url, timeout=120) as lean:
        def timed(work) -> float:
            began = time.perf_counter()
            worker.submit(work).result()
            return 1000 * (time.perf_counter() - began)

        def served(data: bytes, **fields: str) -> tuple[float, float]:
            """(total, total less the wait for the request's body)."""
            response = http.post("/api/explain", data={
                "model": work.name, "method": "gradcam", "layer": work.layer,
                "target": "top1", **fields}, files=[("image", ("picture", data, work.mime))])
            assert response.status_code == 200, response.text
            timing = parse_server_timing(response.headers["server-timing"])
            return timing["total"], timing["total"] - timing.get("upload", 0.0)

        def leanest(data: bytes, threads: int) -> float:
            response = lean.post(f"/{threads}", files=[("image", ("picture", data, work.mime))])
            return parse_server_timing(response.headers["server-timing"])["total"]

        for round_ in range(rounds + 3):  # the first 3 warm up
            tensor, data = inputs[round_ % len(inputs)], pictures[round_ % len(inputs)]
            total, less_upload = served(data)
            figures = {"server": total, "server, upload left out": less_upload}
            for count in counts:
                figures[f"library@{count}"] = timed(lambda t=tensor, c=count: library(t, c))
            figures["server, input left out"] = served(data, input="false")[0]
            for count in counts:
                figures[f"library from bytes@{count}"] = timed(
                    lambda d=data, c=count: library(d, c))
            figures["server, format=png"] = served(data, format="png")[0]
            for count in counts:
                figures[f"leanest server@{count}"] = leanest(data, count)
            if round_ >= 3:
                for name, value in figures.items():
                    times[name].append(value)
        idle = http.get("/api/status").json()["idle_threads"]
    medians = {name: statistics.median(values) for name, values in times.items()}
    costs: dict[str, Any] = {name: value for name, value in medians.items() if "@" not in name}
    for name in on_counts:
        by_threads = {count: medians[f"{name}@{count}"] for count in counts}
        fastest = min(by_threads, key=by_threads.__getitem__)
        costs[name] = by_threads[fastest]
        costs[f"{name} threads"] = fastest
        costs[f"{name} by threads"] = by_threads
    costs["idle threads"] = idle
    return costs


def threads_sentence(costs: dict[str, Any]) -> str:
    """Which count each row on both counts took its figure from, and every count's median."""
    rows = "; ".join(
        f"{name}: {costs[name + ' threads']} thread(s) ("
        + ", ".join(f"{count}: {ms:.2f}" for count, ms in costs[name + " by threads"].items())
        + ")" for name in ("library", "library from bytes", "leanest server"))
    return ("The library rows and the leanest server ran on one torch thread and on all in every "
            "round; each figure above is its faster count's median (median ms by thread count: "
            f"{rows}).")


def idle_threads_sentence(idle: dict | None) -> str:
    """What the server's trials chose for a request that finds it idle (GET /api/status)."""
    if idle is None:
        return ("Every call ran on the worker's threads (no share to widen: a GPU, one torch "
                "thread, or split threads off).")
    kinds = "; ".join(
        f"{kind['model']} on {kind['shapes']}: {kind['chosen_threads']} thread(s) "
        f"(median ms by thread count in its trials: {kind['median_ms']}; since the choice, "
        f"of the latest calls and probes: {kind['since_chosen_ms']}; "
        f"{kind['switches']} switch(es))"
        for kind in idle["kinds"])
    return (f"A request that finds the server idle runs its model call on the worker's share "
            f"({idle['share']} torch thread(s)) or on all {idle['whole']}, whichever its first "
            f"calls measured faster ({idle['trials']} timed calls of each), checked by a probe "
            f"of the other count every {idle['probe_every']} such calls (`camlens.serve.cores`); "
            f"at the end of the paired rounds: {kinds}.")


def tolerance(device: torch.device) -> tuple[float, str]:
    """How far a served score may be from the library's call on the picture alone, relative,
    and the words for it: float32 rounding on a CPU; on a GPU whose convolutions use TF32
    (torch's default, ``torch.backends.cudnn.allow_tf32``), TF32's rounding, since a batch of
    another size may run another cuDNN algorithm (a 10-bit mantissa: about 1e-3)."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return 2e-3, "TF32 rounding (the GPU's convolutions use TF32, torch's default)"
    return 1e-4, "float32 rounding"


def wrong_answers(answers: list[tuple], references: list, device: torch.device
                  ) -> tuple[list[str], float]:
    """What differs from the library in the soak's answers beyond :func:`tolerance` (empty
    when all agree), and the largest relative difference of a score."""
    problems, largest = [], 0.0
    relative = tolerance(device)[0]
    for picture, _, status, body, *_ in answers:
        if status != 200:
            problems.append(f"status {status}: {str(body)[:200]}")
            continue
        cell = body["images"][0]["explanations"][0]["maps"][0]
        reference = references[picture]
        raw = np.asarray(cell["raw"], dtype=np.float32)
        if cell["class"] != int(reference.targets[0]):
            problems.append(f"picture {picture}: class {cell['class']} where the library says "
                            f"{int(reference.targets[0])}")
            continue
        score = float(reference.scores[0])
        largest = max(largest, abs(cell["score"] - score) / max(1.0, abs(score)))
        if abs(cell["score"] - score) > relative * max(1.0, abs(score)):
            problems.append(f"picture {picture}: score {cell['score']} against {score}")
        elif not np.allclose(raw, reference.raw[0].cpu().numpy(), rtol=10 * relative,
                             atol=1e-5):
            problems.append(f"picture {picture}: raw map off by "
                            f"{np.abs(raw - reference.raw[0].cpu().numpy()).max():.2e}")
        elif not base64.b64decode(cell["overlay"].split(",", 1)[1]).startswith(b"\x89PNG"):
            problems.append(f"picture {picture}: the overlay is not a PNG")
    return problems, largest


def model_changes(model, fresh) -> list[str]:
    """How ``model`` differs from ``fresh`` (the shipped weights, loaded anew)."""
    changes = []
    state = model.state_dict()
    for key, value in fresh.state_dict().items():
        if not torch.equal(state[key].cpu(), value.cpu()):
            changes.append(f"{key} changed")
    if any(module.training for module in model.modules()):
        changes.append("a module is in training mode")
    if any(p.grad is not None or not p.requires_grad for p in model.parameters()):
        changes.append("a parameter has a gradient or lost requires_grad")
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
           for m in model.modules()):
        changes.append("a hook is left on a module")
    return changes


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and every process under it (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [int(child) for child in
                         Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return total


def processes_row(work: Work, device: str, processes: int, clients: int, seconds: float
                  ) -> tuple[list[tuple], float]:
    """``clients`` against ``camlens serve --processes N`` (a command of its own, as a user
    starts it): the answers, and the CPU seconds of all its processes meanwhile."""
    import signal
    import socket
    import subprocess

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("camlens")), "serve", "--processes",
               str(processes), "--no-zoo", *work.serve_args, "--port", str(port), "--queue",
               "64", *(["--device", device] if device != "cpu" else [])]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                httpx.get(f"{url}/api/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        load(url, clients, 2.0, work.pictures, work)  # each process's first calls warm it
        began = tree_cpu(server.pid)
        answers = load(url, clients, seconds, work.pictures, work)
        return answers, tree_cpu(server.pid) - began
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores {platform.machine()} ({cpu}), {gpu}; torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads, Python "
            f"{platform.python_version()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each timed phase")
    parser.add_argument("--soak", type=float, default=30.0, help="the 16-client soak")
    parser.add_argument("--quick", action="store_true", help="1 s phases (a smoke run)")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--whole-threads", action="store_true",
                        help="every worker on all of torch's threads (Limits.split_threads "
                             "off), to compare")
    parser.add_argument("--model", choices=("digits-gap", "resnet18"), default="digits-gap",
                        help="the served model: the shipped digit model, or torchvision's "
                             "resnet18 on 224x224 pictures (random weights)")
    parser.add_argument("--rounds", type=int,
                        help="rounds of the paired costs (default: 40 per second of "
                             "--seconds for digits-gap, 10 for resnet18)")
    parser.add_argument("--device", default="cpu",
                        help="where the served model runs: cpu, cuda or cuda:N (the library "
                             "rows run there too)")
    parser.add_argument("--work", type=Path,
                        help="folder for resnet18's weights and pictures (default: a temp one)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    if args.quick:
        args.seconds, args.soak = 1.0, 1.0

    import socket
    import warnings

    import camlens
    from camlens.cli.serve import build_app
    from camlens.explanation import ExplanationWarning
    from camlens.serve import Limits

    warnings.simplefilter("ignore", ExplanationWarning)
    if args.model == "resnet18":
        import tempfile

        work = resnet18_work(args.work or Path(tempfile.mkdtemp(prefix="camlens-serve-")),
                             args.device)
    else:
        work = digits_work(args.device)
    catalog, model, pictures = work.catalog, work.loaded.model, work.pictures
    rounds = args.rounds or max(30, int((10 if args.model == "resnet18" else 40)
                                        * args.seconds))
    inputs = [decoded(work, data) for data in pictures]
    references = [camlens.explain(model, tensor.to(work.device), method="gradcam",
                                  layer=work.layer)
                  for tensor in inputs]

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as worker:  # where the server runs it: off the main thread
        threads, thread_trial = worker.submit(library_threads, work, inputs).result()
        library = worker.submit(library_timing, work, inputs, args.seconds, threads).result()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    split = not args.whole_threads
    app = build_app(catalog, Limits(queue_size=64, split_threads=split))
    from camlens.serve.encoding import png_bytes

    def lean_answer(data: bytes, threads: int) -> bytes:
        """The library row's work from the uploaded bytes on ``threads`` torch threads (0: the
        worker's own count), the overlay's PNG bytes back."""
        return png_bytes(explained_overlay(work, data, threads or None))

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        lean_port = probe.getsockname()[1]
    server, thread = serve(app, port)
    lean_server, lean_thread = serve(leanest_app(lean_answer), lean_port)
    try:
        costs = paired_costs(f"http://127.0.0.1:{port}", work, inputs, pictures, rounds,
                             f"http://127.0.0.1:{lean_port}")
    finally:
        for running, its_thread in ((server, thread), (lean_server, lean_thread)):
            running.should_exit = True
            its_thread.join(timeout=30)
    print(f"paired costs: {costs}", file=sys.stderr)
    rows = []
    soak_answers: list[tuple] = []
    for label, clients, seconds, window in (
            ("1 client", 1, args.seconds, 0.02), ("4 clients", 4, args.seconds, 0.02),
            ("16 clients, batching off", 16, args.seconds, 0.0),
            ("16 clients (the soak)", 16, args.soak, 0.02)):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = build_app(catalog, Limits(batch_window_s=window, queue_size=64,
                                        split_threads=split))
        server, thread = serve(app, port)
        try:
            cpu_began = time.process_time()  # the server's process: the clients run apart
            answers = load(f"http://127.0.0.1:{port}", clients, seconds, pictures, work)
            cpu = time.process_time() - cpu_began
            stats = app.state.server.batcher.stats
        finally:
            server.should_exit = True
            thread.join(timeout=30)
        figures = summary(answers, seconds)
        figures["cpu_ms"] = 1000 * cpu / max(1, len(answers) - figures["errors"])
        figures["per_call"] = stats.requests / stats.calls if stats.calls else 0.0
        figures["phases"] = server_phases(answers)
        rows.append((label, clients, seconds, figures))
        if label.endswith("(the soak)"):
            soak_answers = answers
        print(f"{label}: {figures}", file=sys.stderr)

    if Path("/proc/self/task").is_dir():  # the row before the soak's, which stays last
        answers, cpu = processes_row(work, args.device, 2, 16, args.seconds)
        figures = summary(answers, args.seconds)
        figures["cpu_ms"] = 1000 * cpu / max(1, len(answers) - figures["errors"])
        figures["per_call"] = float("nan")  # each process batches on its own
        figures["phases"] = server_phases(answers)
        rows.insert(len(rows) - 1, ("16 clients, 2 processes (`--processes 2`)", 16,
                                    args.seconds, figures))
        print(f"2 processes: {figures}", file=sys.stderr)
    problems, largest = wrong_answers(soak_answers, references, work.device)
    changes = model_changes(model, work.fresh())
    elapsed = time.perf_counter() - started

    command = shlex.join(["python", "benchmarks/bench_serve.py", *sys.argv[1:]])
    lines = [
        "# `camlens serve` under load" + ("" if args.model == "digits-gap" else
                                          f": {args.model}"),
        "",
        f"Measured by `{command}` "
        f"({elapsed:.0f} s), on {machine()}; load average {load_before:.2f} at the start "
        "(other work on the machine slows every row alike). Server and clients share it: the "
        "clients run in a second process (one thread and one HTTP connection each), the server "
        "is `camlens serve`'s app on uvicorn (2 worker threads, "
        + ("each on all of torch's threads (--whole-threads)" if args.whole_threads else
           "each on its share of torch's threads (`Limits.split_threads`)")
        + "; while both are busy, requests wait up to 20 ms to be batched, up to 16 pictures a "
        "call).",
        "",
        "CPU per call or answer: the CPU time of the process (every thread; the server's "
        "process holds no client) over the calls or answers, the cost of each on a machine "
        "whose cores are all busy.",
        "",
        f"The library rows of this table run on {threads} torch thread(s): the faster for "
        "this work of " + " and ".join(str(count) for count in thread_trial)
        + " in a trial on the worker thread just before (explain + overlay PNG, median ms: "
        + ", ".join(f"{count} thread(s) {ms:.2f}" for count, ms in thread_trial.items())
        + "), so the server is compared with the library at its best, not at torch's "
        "default (the paired rounds below time both counts in every round).",
        "",
        f"Work: `POST /api/explain`, {work.described}, top-1; the JSON answer carries the "
        "input and overlay PNGs, the hover values and the raw map.",
        "",
        "| | calls or answers/s | median latency | 95th percentile | CPU per call or answer "
        "| requests per library call | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, figures in library.items():
        lines.append(f"| bare library, one worker thread on {threads} torch thread(s): {name} "
                     f"| {figures['per_s']:.0f} | "
                     f"{figures['median_ms']:.1f} ms | {figures['p95_ms']:.1f} ms | "
                     f"{figures['cpu_ms']:.1f} ms | - | - |")
    for label, _clients, seconds, figures in rows:
        lines.append(f"| server, {label}, {seconds:.0f} s | {figures['per_s']:.0f} | "
                     f"{figures['median_ms']:.1f} ms | {figures['p95_ms']:.1f} ms | "
                     f"{figures['cpu_ms']:.1f} ms | "
                     + ("-" if figures["per_call"] != figures["per_call"] else
                        f"{figures['per_call']:.1f}") + f" | {figures['errors']} |")
    phases = rows[0][3]["phases"]
    with_png = library["explain + overlay PNG"]["median_ms"]
    lines += [
        "",
        "Where one client's request went, on the server (medians of each answer's "
        "`Server-Timing` header, ms; `total` runs from the request's arrival to its answer's "
        "start, the rest of the client's latency is HTTP on both sides and the client):",
        "",
        "| " + " | ".join(phases) + " | client's latency | library explain + overlay PNG |",
        "| " + " | ".join("---:" for _ in range(len(phases) + 2)) + " |",
        "| " + " | ".join(f"{value:.1f}" for value in phases.values())
        + f" | {rows[0][3]['median_ms']:.1f} | {with_png:.1f} |",
        "",
        "**The cost bar, measured in pairs.** The figures above come from runs minutes apart on "
        "a shared machine; for the bar each kind of work is measured in turn within every "
        f"round ({rounds} rounds, medians in ms, one request at a "
        "time; the server's figure is its own time, the `Server-Timing` total):",
        "",
        "| library: explain + overlay PNG | library from the uploaded bytes (decode, preprocess, "
        "explain, overlay PNG) | server | server, `input=false` (no input picture in the "
        "answer) | server, less the wait for the body (`upload`) | server, `format=png` (the "
        "overlay PNG alone, no JSON) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {costs['library']:.2f} | {costs['library from bytes']:.2f} | {costs['server']:.2f} "
        f"| {costs['server, input left out']:.2f} | {costs['server, upload left out']:.2f} "
        f"| {costs['server, format=png']:.2f} |",
        "",
        f"The server's own time per request is {costs['server'] / costs['library']:.2f}x the "
        "library call plus its overlay PNG, "
        f"{costs['server'] / costs['library from bytes']:.2f}x the same from the uploaded bytes; "
        "without the input picture (the work the library row does: one PNG) "
        f"{costs['server, input left out'] / costs['library']:.2f}x and "
        f"{costs['server, input left out'] / costs['library from bytes']:.2f}x (the issue's "
        "bar: at most 1x). Less the wait for the request's body (the `upload` phase: the "
        "client's bytes in transit, not the server's work): "
        f"{costs['server, upload left out'] / costs['library']:.2f}x and "
        f"{costs['server, upload left out'] / costs['library from bytes']:.2f}x. With "
        "`format=png` (the answer is the overlay PNG itself: the library row's work plus HTTP "
        f"and the form): {costs['server, format=png'] / costs['library']:.2f}x and "
        f"{costs['server, format=png'] / costs['library from bytes']:.2f}x.",
        "",
        "The leanest server this stack allows (`leanest_app`: a bare ASGI app on the same "
        "uvicorn, no framework, middleware or checks, the file taken out of the form by "
        "python-multipart's parser, the library row's work from the bytes on a worker thread, "
        "the overlay's PNG as the answer) took "
        f"{costs['leanest server']:.2f} ms in the same rounds: "
        f"{costs['leanest server'] / costs['library']:.2f}x the library call plus its PNG and "
        f"{costs['leanest server'] / costs['library from bytes']:.2f}x the same from the bytes. "
        "camlens's `format=png` answer (the same work and answer, with its checks, limits, "
        "queue and timing) took "
        f"{costs['server, format=png'] / costs['leanest server']:.2f}x the leanest server's "
        "time.",
        "",
        threads_sentence(costs),
        "",
        idle_threads_sentence(costs["idle threads"]),
    ]
    soak = rows[-1][3]
    lines += [
        "",
        f"The soak: {soak['answers']} answers from 16 clients in {rows[-1][2]:.0f} s, "
        f"{soak['errors']} errors; "
        + ("every answer's class, score and raw map equal to the library's call on that "
           f"picture alone within {tolerance(work.device)[1]}: scores at most "
           f"{largest:.1e} apart, relative" if not problems else
           f"{len(problems)} answers differ from the library beyond "
           f"{tolerance(work.device)[1]}, e.g. {problems[0]}")
        + f"; {work.name} at the end: "
        + ("untouched (weights and buffers equal to the shipped ones, eval mode, no hooks, no "
           "gradients)." if not changes else f"CHANGED: {'; '.join(changes)}."),
        "",
        "The latency a client sees includes HTTP, multipart parsing, decoding the picture and "
        f"encoding the JSON; with 16 clients on {os.cpu_count()} cores it is mostly waiting in "
        "the queue.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    return 1 if problems or changes or soak["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
