"""``camlens serve``: the explorer in the browser and the JSON API (the ``serve`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from camlens.cli.options import DEVICE_OPTION, VERBOSE_OPTION, device_option

__all__ = ["app_from_environment", "build_app", "serve", "target_parser"]

#: The environment variable that carries ``camlens serve``'s settings to its processes.
SETTINGS_VARIABLE = "CAMLENS_SERVE_SETTINGS"


def target_parser():
    """``--target`` text read as ``camlens explain`` reads it; a bad one is a ValueError with
    the command line's message (the server answers 400 with it)."""
    from camlens.cli.explain import parse_target

    def parse(text: str, class_names: Sequence[str] | None):
        try:
            return parse_target(text, class_names)
        except click.BadParameter as error:
            raise ValueError(error.message) from None

    return parse


def build_app(catalog=None, limits=None, *, models: Sequence[str] = (),
              weights: Sequence[str | None] = (), archs: Sequence[str | None] = (),
              zoo: bool = True, device: str = "cpu"):
    """The explorer's ASGI app: ``catalog`` (default: the zoo and ``models``, loaded as
    ``camlens explain --model`` loads them, pickles refused) under ``limits``."""
    from camlens.cli.explain import display_image
    from camlens.cli.targets import prepare_target
    from camlens.serve import Limits, ModelCatalog, create_app

    if catalog is None:
        catalog = ModelCatalog.load(models, weights, archs, zoo=zoo, device=device)
    return create_app(catalog, limits or Limits(), parse_target=target_parser(),
                      picture_of=display_image, prepare_target=prepare_target)


def app_from_environment():
    """The app of one of ``camlens serve --processes N``'s processes (uvicorn's factory): the
    settings the command checked, from :data:`SETTINGS_VARIABLE`; torch on this process's
    share of the cores."""
    import json
    import os
    import warnings

    import torch

    from camlens.explanation import ExplanationWarning
    from camlens.serve import Limits

    warnings.simplefilter("ignore", ExplanationWarning)
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    torch.set_num_threads(max(1, torch.get_num_threads() // settings["processes"]))
    return build_app(None, Limits(**settings["limits"]), models=settings["models"],
                     weights=settings["weights"], archs=settings["archs"],
                     zoo=settings["zoo"], device=settings["device"])


@click.command()
@VERBOSE_OPTION
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 exposes the server to the network).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--model", "-m", "model_specs", multiple=True,
              help="A model to serve besides the zoo (repeat): a zoo name, torchvision:NAME, "
                   "timm:NAME, hf:FOLDER or a model file.")
@click.option("--weights", "weights_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Weights (.safetensors, or .pth read with weights_only=True) of the --model "
                   "in the same position.")
@click.option("--arch", "archs", multiple=True,
              help="The architecture of the --model file in the same position.")
@click.option("--no-zoo", is_flag=True, help="Serve only the --model ones.")
@click.option("--max-upload-mb", default=16.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Largest request body.")
@click.option("--max-pixels", default=16_000_000, show_default=True, type=click.IntRange(min=1),
              help="Largest picture (width x height).")
@click.option("--max-audio-s", default=30.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Longest recording.")
@click.option("--queue", "queue_size", default=32, show_default=True,
              type=click.IntRange(min=1), help="Requests running or waiting at once; more get 503.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Threads running model work.")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True,
              type=click.FloatRange(min=0.1), help="Seconds before a request gets 504.")
@click.option("--batch-ms", default=20.0, show_default=True, type=click.FloatRange(min=0),
              help="While every worker is busy, how long a request waits for others to join "
                   "its batch (0: no batching).")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(min=1),
              help="Most images in one batched call.")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(min=1),
              help="Server processes sharing the port, each with its models, threads and "
                   "queue: more answers per second under load (the Python of parsing and "
                   "encoding runs in parallel), the memory of the models times N.")
@DEVICE_OPTION
def serve(host, port, model_specs, weights_files, archs, no_zoo, max_upload_mb, max_pixels,
          max_audio_s, queue_size, workers, timeout_s, batch_ms, max_batch, processes,
          device) -> None:
    """Open the explorer: a page at http://HOST:PORT/ and the JSON API under /api (its
    reference at /docs). Pickled checkpoints are refused; nothing is written to disk."""
    try:
        import uvicorn
    except ImportError:
        raise click.UsageError("camlens serve needs the serve extra: pip install "
                               "'camlens[serve]'") from None
    import warnings

    from camlens.explanation import ExplanationWarning
    from camlens.models import ModelLoadError
    from camlens.serve import Limits, ModelCatalog

    # What the engine does not stand behind reaches the user in each answer's notes.
    warnings.simplefilter("ignore", ExplanationWarning)

    if len(weights_files) > len(model_specs) or len(archs) > len(model_specs):
        raise click.UsageError("each --weights and --arch goes with the --model in the same "
                               "position; give a --model for each")
    if no_zoo and not model_specs:
        raise click.UsageError("--no-zoo leaves nothing to serve; add --model")
    limits = Limits(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels,
                    max_audio_s=max_audio_s, queue_size=queue_size, workers=workers,
                    timeout_s=timeout_s, batch_window_s=batch_ms / 1000, max_batch=max_batch)
    try:
        catalog = ModelCatalog.load(model_specs, [str(w) for w in weights_files], archs,
                                    zoo=not no_zoo, device=device_option(device))
    except (ModelLoadError, FileNotFoundError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    for reason in catalog.skipped:
        click.echo(f"note: not serving {reason}", err=True)
    click.echo(f"camlens explorer: http://{host}:{port}/  (API reference: /docs; models: "
               f"{', '.join(catalog.models)}"
               + (f"; {processes} processes" if processes > 1 else "") + "; Ctrl-C stops)")
    if processes == 1:
        uvicorn.run(build_app(catalog, limits), host=host, port=port, log_level="warning")
        return
    # each process loads the models checked above; uvicorn starts them and shares the port
    import dataclasses
    import json
    import os

    del catalog
    os.environ[SETTINGS_VARIABLE] = json.dumps({
        "limits": dataclasses.asdict(limits), "models": list(model_specs),
        "weights": [str(w) for w in weights_files], "archs": list(archs), "zoo": not no_zoo,
        "device": str(device_option(device)), "processes": processes})
    uvicorn.run("camlens.cli.serve:app_from_environment", factory=True, workers=processes,
                host=host, port=port, log_level="warning")
