"""``camlens explain-audio FILE --model accent-attention --out DIR``: the predicted accent, the
time-span table, and a picture (registered on the ``camlens`` group with ``main.add_command``).

Exit status: 0 on success; 1 for a file that cannot be explained (missing, empty, too short,
silent or unreadable), with one line saying why; 2 for a bad option (an unknown model, a model
that is not an audio model, missing weights, a bad words file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from camlens.audio.relevance import METHODS
from camlens.cli.options import VERBOSE_OPTION, writable_folder

__all__ = ["AUDIO_MODELS", "explain_audio"]

AUDIO_MODELS = ("accent-attention", "accent-cnn")


def _load_zoo_model(name: str, weights: Path | None, option: str):
    """(model, weights description) of a zoo audio model, or a usage error naming what is
    accepted."""
    from camlens import zoo

    if name not in AUDIO_MODELS:
        try:
            zoo.get_weights(name)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=option) from None
        raise click.BadParameter(f"{name!r} is not an audio model; audio models: "
                                 f"{', '.join(AUDIO_MODELS)}", param_hint=option)
    try:
        return zoo.load(name, weights=weights), zoo.get_weights(name)
    except (FileNotFoundError, RuntimeError, OSError) as error:
        raise click.UsageError(f"cannot load {name}: {error}") from None


def _read_words(path: Path, required: bool) -> list[dict] | None:
    """Word stamps from a JSON file: a list of ``{"word", "start_s", "end_s"}`` objects or an
    object with such a list under ``"words"`` (the sidecar of the accent data sets). A sidecar
    that is not such a file is ignored (``required=False``); a ``--words`` file must be one."""
    from camlens.audio.relevance import word_spans

    try:
        content = json.loads(path.read_text())
        words = content.get("words") if isinstance(content, dict) else content
        if not isinstance(words, list):
            raise ValueError("expected a list of words or an object with a 'words' list")
        word_spans(words)  # checks every entry
        return words
    except (OSError, ValueError, KeyError, TypeError) as error:
        if required:
            raise click.BadParameter(f"cannot read word stamps from {path}: {error}; expected "
                                     '[{"word": ..., "start_s": ..., "end_s": ...}, ...]',
                                     param_hint="--words") from None
        return None


@click.command("explain-audio")
@VERBOSE_OPTION
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "-m", "model_name", default="accent-attention", show_default=True,
              help=f"The audio model: {', '.join(AUDIO_MODELS)}.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Weights for --model (default: the shipped ones).")
@click.option("--cnn", "cnn_name", default="accent-cnn", show_default=True,
              help="Convolutional model for the Grad-CAM column next to attention; 'none' to "
              "leave it out.")
@click.option("--method", "method_names", multiple=True, type=click.Choice(METHODS),
              help="Relevance method; repeat for several (default: all the models allow).")
@click.option("--words", "words_path", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON word time stamps (default: FILE's .json sidecar when it has words).")
@click.option("--spans", default="auto", show_default=True,
              type=click.Choice(["auto", "words", "segments"]),
              help="Table rows: words and the gaps between them, or fixed spans of --step.")
@click.option("--step", default=0.5, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds per table row with --spans segments.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created): FILE_relevance.png and FILE_relevance.json.")
def explain_audio(file: Path, model_name: str, weights: Path | None, cnn_name: str,
                  method_names: tuple[str, ...], words_path: Path | None, spans: str,
                  step: float, out: Path) -> None:
    """Explain the accent predicted for the recording FILE (WAV, FLAC, OGG, any sample rate,
    stereo mixed down): print the accent and the relevance of each time span, and write the
    picture."""
    from camlens.audio.plot import relevance_figure, save_relevance_figure
    from camlens.audio.relevance import audio_relevance
    from camlens.io.audio import load_audio

    model, description = _load_zoo_model(model_name, weights, "--model")
    cnn = None
    if model_name == "accent-attention" and cnn_name.lower() != "none":
        cnn = _load_zoo_model(cnn_name, None, "--cnn")
    words = _read_words(words_path, required=True) if words_path is not None else None
    try:
        waveform, _ = load_audio(file)
        if float(waveform.abs().max()) == 0.0:
            raise ValueError(f"{file} holds only digital silence; there is nothing to explain")
    except (FileNotFoundError, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    sidecar = file.with_suffix(".json")
    if words is None and sidecar.is_file():
        words = _read_words(sidecar, required=False)
    if model_name == "accent-attention":
        plan = [(model, description, ("attention", "attention-gradient"))]
        if cnn is not None:
            plan.append((*cnn, ("gradcam",)))
    else:
        plan = [(model, description, ("gradcam",))]
    available = [method for *_, methods in plan for method in methods]
    chosen = list(method_names) or available
    unknown = [method for method in chosen if method not in available]
    if unknown:
        raise click.UsageError(f"method {unknown[0]!r} is not available with the models given; "
                               f"available: {', '.join(available)}")
    relevance = None
    for explained, weights_of, methods in plan:
        wanted = [method for method in methods if method in chosen]
        if wanted:  # the second model explains the class the first one explained
            part = audio_relevance(explained, waveform, methods=wanted,
                                   layer=weights_of.target_layer, words=words,
                                   class_names=weights_of.class_names,
                                   target=None if relevance is None else relevance.target)
            relevance = part if relevance is None else relevance.merge(part)
    if spans == "words" and not relevance.words:
        raise click.BadParameter("needs word time stamps (--words or a .json sidecar)",
                                 param_hint="--spans")

    click.echo(relevance.summary(label="accent"))
    click.echo(relevance.table(spans=spans, step_s=step))
    for note in relevance.notes:
        click.echo(f"note: {note}", err=True)
    writable_folder(out)
    picture = save_relevance_figure(relevance_figure(relevance, waveform),
                                    out / f"{file.stem}_relevance.png")
    record = {"file": str(file), "model": model_name,
              "cnn": cnn_name if cnn is not None else None, **relevance.to_dict()}
    record_path = out / f"{file.stem}_relevance.json"
    record_path.write_text(json.dumps(record, indent=1))
    click.echo(f"wrote {picture} and {record_path}")
