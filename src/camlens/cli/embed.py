"""``camlens embed``: representation maps of a model's layers over a data set, with a linear
probe per layer (:mod:`camlens.representations`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from camlens.cli.options import (
    DEVICE_OPTION,
    VERBOSE_OPTION,
    device_option,
    layer_option,
    load_or_exit,
    model_options,
    writable_folder,
)

__all__ = ["embed", "read_labelled_folder"]

THUMBNAIL = 64


def read_labelled_folder(folder: Path, limit: int, seed: int):
    """Images of ``folder`` as PIL pictures with labels: the ImageFolder layout (one
    sub-folder per class, named after it), or a flat folder (no labels). At most ``limit``
    images, drawn at random from ``seed`` when there are more. Returns ``(pictures, labels or
    None, class names or None)``."""
    import torch

    from camlens.io.images import ImageFileError, find_images, read_image

    classes = sorted(path.name for path in folder.iterdir()
                     if path.is_dir() and not path.name.startswith(".") and find_images([path]))
    if classes:
        files = [(file, index) for index, name in enumerate(classes)
                 for file in find_images([folder / name])]
    else:
        files = [(file, None) for file in find_images([folder])]
    if not files:
        raise click.BadParameter(f"no image files in {folder}; give a folder of images, or of "
                                 "class sub-folders of images", param_hint="--data")
    if len(files) > limit:
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))
        files = [files[index] for index in sorted(order[:limit].tolist())]
    pictures, labels = [], []
    for file, label in files:
        try:
            pictures.append(read_image(file))
        except ImageFileError as error:
            click.echo(f"warning: skipped {error}", err=True)
            continue
        labels.append(label)
    if not pictures:
        raise click.BadParameter(f"no readable image in {folder}", param_hint="--data")
    return pictures, (labels if classes else None), (tuple(classes) if classes else None)


def _digit_pictures(limit: int, seed: int):
    """``limit`` cluttered digits of the test part (seed ``seed``) as RGB PIL pictures (what
    every model's preprocessing reads; the digit models average them back to grey), labels."""
    from PIL import Image

    from camlens.data.digits import CLASS_NAMES, ClutteredDigits

    data = ClutteredDigits(limit, "test", seed)
    pictures, labels = [], []
    for index in range(limit):
        item = data[index]
        grey = Image.fromarray((item["image"][0] * 255).round().byte().numpy())
        pictures.append(grey.convert("RGB"))
        labels.append(int(item["label"]))
    return pictures, labels, CLASS_NAMES


def _probe_splits(labels, seed: int):
    """Indices of a seeded 50 / 25 / 25 split into probe train, validation and test."""
    import torch

    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    half, three_quarters = len(order) // 2, (3 * len(order)) // 4
    return order[:half], order[half:three_quarters], order[three_quarters:]


@click.command()
@model_options
@click.option("--layer", "-l", "layer_names", multiple=True,
              help="A layer to map (default: the model's own); repeat for several.")
@click.option("--method", default="pca", show_default=True,
              help="2-D embedding: pca, tsne (scikit-learn) or umap (needs umap-learn).")
@click.option("--data", "data_source", default="digits", show_default=True,
              help="digits (cluttered digits of the test split) or a folder of images: class "
                   "sub-folders (ImageFolder layout) give labels; a flat folder gives none.")
@click.option("--limit", type=click.IntRange(min=3), default=500, show_default=True,
              help="How many images to embed.")
@click.option("--pooling", type=click.Choice(["mean", "max", "grid", "flatten"]),
              default="mean", show_default=True,
              help="How a layer's output becomes one vector per image: mean or max over "
                   "positions, a 4x4 grid of means, or every value.")
@click.option("--seed", default=0, show_default=True, help="Seed of the data, the embedding "
              "and the probe's split.")
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="Fit a linear probe per layer (labelled data only): seeded 50/25/25 split "
                   "into probe train, validation (chooses the L2 penalty) and test.")
@click.option("--out", "-o", default="camlens-embed", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Output folder (created).")
@DEVICE_OPTION
@VERBOSE_OPTION
def embed(model_spec, weights, arch, trust_checkpoint, layer_names, method, data_source, limit,
          pooling, seed, probe, out, device) -> None:
    """Representation maps: each --layer's activations over the data, embedded in 2-D and
    coloured by class, with nearest-neighbour thumbnails (embed-LAYER.png), and a linear probe
    per layer; coordinates, labels and probe accuracies go to embedding.json."""
    import numpy as np
    import torch

    from camlens.representations.activations import layer_activations
    from camlens.representations.embedding import (
        EMBEDDINGS,
        embed_2d,
        embedding_figure,
        neighbour_agreement,
    )
    from camlens.representations.probes import fit_probe

    method_key = method.lower().replace("-", "")
    if method_key not in EMBEDDINGS:
        raise click.BadParameter(f"unknown embedding method {method!r}; choose one of "
                                 f"{', '.join(EMBEDDINGS)}", param_hint="--method")
    if method_key == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise click.BadParameter("umap needs the optional package umap-learn, which is not "
                                     "installed (pip install umap-learn); or use --method pca "
                                     "or tsne", param_hint="--method") from None
    if data_source != "digits" and not Path(data_source).is_dir():
        raise click.BadParameter(f"{data_source!r} is neither 'digits' nor a folder",
                                 param_hint="--data")
    loaded = load_or_exit(model_spec, weights, arch, trust_checkpoint)
    if len(set(layer_names)) < len(layer_names):
        raise click.BadParameter(f"a layer is given twice: {', '.join(layer_names)}",
                                 param_hint="--layer")
    layers = [layer_option(loaded, name) for name in layer_names or (None,)]
    if layers == [None]:
        raise click.BadParameter("this model has no default layer; name one with --layer (see "
                                 f"`camlens layers {model_spec}`)", param_hint="--layer")
    writable_folder(out)
    if data_source == "digits":
        pictures, labels, class_names = _digit_pictures(limit, seed)
    else:
        pictures, labels, class_names = read_labelled_folder(Path(data_source), limit, seed)
    inputs = torch.cat([loaded.preprocess(picture) for picture in pictures])
    thumbnails = torch.stack([torch.as_tensor(np.array(
        picture.convert("L").resize((THUMBNAIL, THUMBNAIL)))).float() / 255
        for picture in pictures])
    label_tensor = torch.tensor(labels) if labels is not None else None
    model = loaded.model.to(device_option(device))
    try:
        features, _ = layer_activations(model, inputs, layers, pooling=pooling)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    can_probe = (probe and label_tensor is not None and len(set(labels)) > 1
                 and len(labels) >= 12)
    splits = _probe_splits(labels, seed) if can_probe else None
    summary = {"model": model_spec, "data": data_source, "method": method_key,
               "pooling": pooling, "seed": seed, "count": len(pictures),
               "class_names": list(class_names) if class_names else None,
               "labels": labels,
               "probe_protocol": ("multinomial logistic regression on standardised features, "
                                  "L2 penalty C chosen on the validation part; seeded 50/25/25 "
                                  "split of the embedded images into probe train, validation "
                                  "and test") if can_probe else None,
               "layers": {}}
    for layer in layers:
        layer_features = features[layer]
        coordinates = embed_2d(layer_features, method_key, seed=seed)
        record: dict = {"features": int(layer_features.shape[1]),
                        "coordinates": [[round(float(x), 5), round(float(y), 5)]
                                        for x, y in coordinates.tolist()]}
        title = f"{loaded.name} {layer} ({pooling}, {method_key})"
        if label_tensor is not None and len(labels) > 5:
            record["neighbour_agreement_5"] = neighbour_agreement(layer_features, label_tensor)
        if splits is not None:
            train, validation, test = ((layer_features[rows], label_tensor[rows])
                                       for rows in splits)
            result = fit_probe(train, validation, test, layer=layer, seed=seed)
            record["probe"] = result.as_dict()
            title += f": probe {100 * result.accuracy:.1f}% (chance {100 * result.chance:.1f}%)"
        path = out / f"embed-{layer or 'output'}.png"
        embedding_figure([{"coordinates": coordinates, "features": layer_features,
                           "title": title}], label_tensor, path, images=thumbnails,
                         class_names=class_names, seed=seed)
        record["figure"] = path.name
        summary["layers"][layer] = record
        probe_text = (f", probe {100 * record['probe']['accuracy']:.1f}%"
                      if "probe" in record else "")
        click.echo(f"{layer}: {record['features']} features{probe_text} -> {path}")
    (out / "embedding.json").write_text(json.dumps(summary, indent=1))
    click.echo(f"wrote {out / 'embedding.json'}")
