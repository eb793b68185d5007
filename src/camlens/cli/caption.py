"""``camlens caption IMAGE``: caption a picture and explain it, one map per word."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from camlens.cli.explain import display_image
from camlens.cli.options import (
    DEVICE_OPTION,
    VERBOSE_OPTION,
    device_option,
    layer_option,
    load_or_exit,
    writable_folder,
)

__all__ = ["caption"]


@click.command()
@VERBOSE_OPTION
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--model", "-m", "model_spec", default="digits-captioner", show_default=True,
              help="A captioning zoo model.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Weights for --model (default: the shipped ones).")
@click.option("--method", "method_name", default="layercam", show_default=True,
              help="CAM method for the caption's map and the words' maps.")
@click.option("--layer", default=None,
              help="Layer to explain (default: the model's word layer, else its target layer).")
@click.option("--beam", default=1, show_default=True, type=click.IntRange(min=1),
              help="Beam width (1: greedy).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created): IMAGE_caption.png (the strip) and .json.")
@click.option("--max-pixels", default=40_000_000, show_default=True, type=click.IntRange(min=1),
              help="Refuse larger images.")
@DEVICE_OPTION
def caption(image, model_spec, weights, method_name, layer, beam, out, max_pixels,
            device) -> None:
    """Caption IMAGE and explain it: one map for the whole caption and one per word."""
    import torch

    from camlens.captioning import caption_tokens, explain_caption
    from camlens.io.images import ImageFileError, read_image
    from camlens.methods import get_method
    from camlens.viz import grid, save_figure
    from camlens.zoo.captioner import END, MAX_TOKENS, START, VOCABULARY

    try:
        method = get_method(method_name).name
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--method") from None
    loaded = load_or_exit(model_spec, weights, None, False)
    if not hasattr(loaded.model, "generate"):
        raise click.UsageError(f"{model_spec} is not a captioning model; try digits-captioner")
    layer = layer_option(loaded, layer or getattr(loaded.model, "word_layer", None))
    device = device_option(device)
    loaded.model.to(device)
    try:
        picture = read_image(image, max_pixels)
    except ImageFileError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    tensor = loaded.preprocess(picture)
    width, height = picture.size
    model_height, model_width = tensor.shape[-2:]
    if abs(width / height - model_width / model_height) > 0.1 * model_width / model_height:
        click.echo(f"note: {image} is {width}x{height}; {model_spec} reads {model_width}x"
                   f"{model_height}, so it was squashed to that shape (aspect "
                   f"{width / height:.2f} -> {model_width / model_height:.2f})", err=True)
    on_device = tensor.to(device)
    words = loaded.model.generate(on_device, beam_size=beam)[0]
    inputs, scored = caption_tokens([words], END, START, MAX_TOKENS)
    inputs = inputs.to(device)
    per_word = explain_caption(loaded.model, on_device, inputs, scored, method, layer).to("cpu")
    whole = explain_caption(loaded.model, on_device, inputs, scored, method, layer,
                            per_token=False).to("cpu")
    names = [VOCABULARY[token] for token in [*words, END]]
    text = " ".join(VOCABULARY[token] for token in words)
    with torch.no_grad():
        step_probabilities = loaded.model(on_device, inputs).softmax(dim=-1)[0].cpu()
    probabilities = [float(step_probabilities[step, token])
                     for step, token in enumerate([*words, END])]
    writable_folder(out)
    strip = out / f"{image.stem}_caption.png"
    maps = [whole.maps[0], *per_word.maps[0, : len(names)]]
    titles = [f"caption: {text or '(empty)'}",
              *(f"{name} (p = {p:.2f})" for name, p in zip(names, probabilities, strict=True))]
    save_figure(grid(display_image(loaded, tensor), maps, titles=titles), strip)
    record = {"file": str(image), "model": loaded.name, "method": method, "layer": layer,
              "caption": text, "tokens": names,
              "token_probabilities": [round(p, 4) for p in probabilities],
              "token_logits": [round(v, 4) for v in per_word.scores[0, : len(names)].tolist()],
              "caption_logprob": round(float(whole.scores[0]), 4), "strip": str(strip)}
    (out / f"{image.stem}_caption.json").write_text(json.dumps(record, indent=2))
    click.echo(f"caption: {text}")
    click.echo(f"wrote {strip}")
