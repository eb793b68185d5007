"""Load a model the command line names: a zoo name, ``torchvision:NAME``, ``timm:NAME`` or a file.

- a shipped zoo name (``digits-gap``): its weights, class names and preprocessing;
- ``torchvision:NAME``: torchvision's own weights mechanism (``get_model(NAME, weights="DEFAULT")``)
  and the weights' transforms and class names; where the weights cannot be downloaded, the error
  says so and how to pass a local file (``--weights``);
- ``timm:NAME``: ``timm.create_model`` and timm's data config for the preprocessing;
- ``hf:FOLDER``: a Hugging Face transformers model saved in a local folder (``config.json`` and
  safetensors weights, from ``save_pretrained``), built by the class its config names, with its
  image processor's preprocessing when the folder has one and its ``id2label`` class names. The
  hub cannot be reached from here: a name that is not a local folder says so;
- a local file: ``.safetensors`` (with ``--arch`` naming the architecture), TorchScript, or a
  pickled ``.pt``/``.pth`` read with ``torch.load(weights_only=True)``, which refuses arbitrary
  Python objects unless the user says ``--trust-checkpoint``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LoadedModel", "ModelLoadError", "host_reachable",
           "load_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelLoadError(ValueError):
    """The model named on the command line cannot be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    """A model ready to explain, with what the command line needs to feed and label it."""

    model: nn.Module
    name: str
    preprocess: Callable  # PIL image -> (1, C, H, W) tensor
    class_names: tuple[str, ...] | None = None
    default_layer: str | None = None
    mean: tuple[float, ...] | None = None  # of the input normalisation, to show the input
    std: tuple[float, ...] | None = None
    tokenizer: Callable | None = None  # text -> token ids, for models that read prompts (CLIP)


def _read_state_dict(path: Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a pickle with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from camlens.zoo.registry import read_weights

        return read_weights(path)
    loaded = _safe_torch_load(path, trust_checkpoint)
    if isinstance(loaded, nn.Module):
        return loaded.state_dict()
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"],
                                                                          dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in
                                               loaded.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return loaded


def _safe_torch_load(path: Path, trust_checkpoint: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several kinds for a refused pickle
        if not trust_checkpoint:
            raise ModelLoadError(
                f"{path} holds pickled Python objects that torch.load(weights_only=True) refuses "
                f"({type(error).__name__}); loading it would run code from the file. Save a "
                "state dict as safetensors instead, or pass --trust-checkpoint if you trust its "
                "source"
            ) from None
    return torch.load(path, map_location="cpu", weights_only=False)


def _fit_state_dict(build: Callable[..., nn.Module], state: dict[str, torch.Tensor],
                    path: Path) -> nn.Module:
    """Build the architecture and load ``state``; a model with another number of classes (a
    fine-tuned head) is rebuilt with the class count under which every shape fits (tried from
    the first axes of the weights that do not fit, smallest first: a detector's class scores
    before its box coordinates; a segmenter's 1x1 convolution head)."""
    model = build()
    mismatched = _mismatched(model, state)
    if mismatched:
        counts = sorted({int(state[key].shape[0]) for key in mismatched if state[key].ndim})
        for count in counts:
            rebuilt = build(num_classes=count)
            if not _mismatched(rebuilt, state):
                model, mismatched = rebuilt, []
                break
    if mismatched:
        key = mismatched[0]
        raise ModelLoadError(f"{path}: {key} has shape {tuple(state[key].shape)} where the "
                             f"architecture has {tuple(model.state_dict()[key].shape)}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        first = (f"no weights for {missing[0]} ({len(missing)} missing)" if missing
                 else f"{unexpected[0]} is not in the architecture ({len(unexpected)} unexpected)")
        raise ModelLoadError(f"{path}: {first}; are these the weights of this architecture?")
    return model


def _mismatched(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    own = model.state_dict()
    return [key for key, value in state.items() if key in own and own[key].shape != value.shape]


def _load_torchvision(name: str, weights_file: Path | None, trust: bool) -> LoadedModel:
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise ModelLoadError(f"unknown torchvision model {name!r}; closest: {', '.join(close)}")
    weights_enum = torchvision.models.get_model_weights(name).DEFAULT
    if weights_file is not None:
        state = _read_state_dict(weights_file, trust)
        # Built without any pretrained part (detectors would fetch their backbone's weights).
        builder = torchvision.models.get_model_builder(name)
        offline = {"weights": None}
        if "weights_backbone" in inspect.signature(builder).parameters:
            offline["weights_backbone"] = None
        model = _fit_state_dict(lambda **kw: builder(**offline, **kw), state, weights_file)
    else:
        try:
            model = torchvision.models.get_model(name, weights=weights_enum)
        except Exception as error:  # noqa: BLE001 - URLError, OSError, RuntimeError...
            raise ModelLoadError(
                f"could not get the pretrained weights of torchvision:{name} "
                f"({type(error).__name__}: {str(error)[:120]}); this machine may be offline. "
                f"Download {weights_enum.url} elsewhere and pass it with --weights FILE "
                "(.pth or .safetensors)"
            ) from None
    transform = weights_enum.transforms()
    categories = weights_enum.meta.get("categories")
    classes = tuple(categories) if categories and _model_classes(model) == len(categories) else None
    # Detection transforms only scale to [0, 1]: no mean and std to undo for the picture.
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    return LoadedModel(model.eval(), f"torchvision:{name}", lambda image: transform(image)[None],
                       classes, None, None if mean is None else tuple(mean),
                       None if std is None else tuple(std))


def _load_timm(name: str, weights_file: Path | None, trust: bool) -> LoadedModel:
    import timm

    if not timm.list_models(name) and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ModelLoadError(f"unknown timm model {name!r}; closest: {', '.join(close)}")
    if weights_file is not None:
        state = _read_state_dict(weights_file, trust)
        model = _fit_state_dict(lambda **kw: timm.create_model(name, pretrained=False, **kw),
                                state, weights_file)
    else:
        offline = not host_reachable("huggingface.co")
        try:
            # Unreachable hub: look in the local cache only, without retries, for this call only.
            with _hub_offline(offline):
                model = timm.create_model(name, pretrained=True)
        except Exception as error:  # noqa: BLE001 - hub errors vary
            raise ModelLoadError(
                f"could not get the pretrained weights of timm:{name} ({type(error).__name__}); "
                "this machine may be offline. Download them elsewhere and pass --weights FILE "
                "(.safetensors or .pth)"
            ) from None
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    classes = None
    if _model_classes(model) == 1000:
        try:
            classes = tuple(timm.data.ImageNetInfo().label_descriptions())
        except Exception:  # noqa: BLE001 - older timm has no ImageNetInfo
            classes = None
    return LoadedModel(model.eval(), f"timm:{name}", lambda image: transform(image)[None],
                       classes, None, tuple(config["mean"]), tuple(config["std"]))


def _load_hugging_face(folder: Path, spec: str) -> LoadedModel:
    """A transformers model from a local ``save_pretrained`` folder (safetensors only)."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{spec}: {folder} is not a local folder with a config.json; camlens does not "
            "download from the Hugging Face Hub (this machine cannot reach it): save the model "
            "elsewhere with model.save_pretrained(FOLDER) and pass hf:FOLDER")
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{spec}: {folder} holds no .safetensors weights; camlens does not "
                             "unpickle pytorch_model.bin (save with safe_serialization=True)")
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("hf: models need the transformers package: pip install "
                             "transformers") from None
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    architectures = getattr(config, "architectures", None) or []
    model_class = next((getattr(transformers, name) for name in architectures
                        if hasattr(transformers, name)), None)
    if model_class is None:
        raise ModelLoadError(f"{spec}: its config names no architecture transformers knows "
                             f"({architectures or 'none'})")
    model = model_class.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    labels = getattr(config, "id2label", None) or {}
    classes = tuple(labels[index] for index in sorted(labels)) if labels else None
    size = getattr(config, "image_size", None) or getattr(
        getattr(config, "vision_config", None), "image_size", 224)
    size = size if isinstance(size, int) else int(size[0])
    tokenizer = None
    if any((folder / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json",
                                                   "vocab.json")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if (folder / "preprocessor_config.json").is_file():
        processor = transformers.AutoImageProcessor.from_pretrained(folder,
                                                                    local_files_only=True)
        mean = tuple(getattr(processor, "image_mean", IMAGENET_MEAN))
        std = tuple(getattr(processor, "image_std", IMAGENET_STD))

        def preprocess(image) -> torch.Tensor:
            return processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]

        return LoadedModel(model.eval(), spec, preprocess, classes, None, mean, std, tokenizer)
    return LoadedModel(model.eval(), spec, _generic_preprocess(size), classes, None,
                       IMAGENET_MEAN, IMAGENET_STD, tokenizer)


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Within the block, and only there, Hugging Face Hub reads its local cache only."""
    if not offline:
        yield
        return
    import huggingface_hub.constants

    saved_env = os.environ.get("HF_HUB_OFFLINE")
    saved_constant = huggingface_hub.constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = saved_constant
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def host_reachable(host: str, timeout: float = 2.0) -> bool:
    """Whether ``host`` resolves and accepts a connection on port 443 within ``timeout``."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _model_classes(model: nn.Module) -> int | None:
    """The number of outputs of the model's last linear layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _generic_preprocess(size: int) -> Callable:
    """Resize to ``size`` x ``size`` and normalise with ImageNet statistics."""
    import numpy as np

    def preprocess(image) -> torch.Tensor:
        resized = image.convert("RGB").resize((size, size))
        tensor = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        return ((tensor - mean[:, None, None]) / std[:, None, None])[None]

    return preprocess


def load_model(spec: str, *, weights: str | Path | None = None, arch: str | None = None,
               trust_checkpoint: bool = False, input_size: int = 224) -> LoadedModel:
    """Resolve a model spec (see the module docstring). Every refusal is a
    :class:`ModelLoadError` of one line that names the file or the name and says what to do."""
    from camlens.zoo.registry import WeightsFileError

    try:
        return _load_model(spec, weights, arch, trust_checkpoint, input_size)
    except WeightsFileError as error:
        raise ModelLoadError(str(error)) from None


def _load_model(spec: str, weights: str | Path | None, arch: str | None, trust_checkpoint: bool,
                input_size: int) -> LoadedModel:
    from camlens.zoo import REGISTRY

    weights_file = Path(weights) if weights is not None else None
    if weights_file is not None and not weights_file.is_file():
        raise ModelLoadError(f"weights file {weights_file} does not exist")
    if spec in REGISTRY:
        zoo_weights = REGISTRY[spec]
        model = zoo_weights.load(weights_file)
        return LoadedModel(model, spec, zoo_weights.preprocess, zoo_weights.class_names,
                           zoo_weights.target_layer)
    if spec.startswith("torchvision:"):
        return _load_torchvision(spec.split(":", 1)[1], weights_file, trust_checkpoint)
    if spec.startswith("timm:"):
        return _load_timm(spec.split(":", 1)[1], weights_file, trust_checkpoint)
    if spec.startswith("hf:"):
        return _load_hugging_face(Path(spec.split(":", 1)[1]), spec)
    path = Path(spec)
    if path.is_file():
        return _load_file_model(path, arch, trust_checkpoint, input_size)
    names = [*REGISTRY, "torchvision:NAME", "timm:NAME", "hf:FOLDER", "a .safetensors/.pt file"]
    close = difflib.get_close_matches(spec, list(REGISTRY), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelLoadError(f"unknown model {spec!r}; {hint}accepted: {', '.join(names)}")


def _load_file_model(path: Path, arch: str | None, trust: bool, input_size: int) -> LoadedModel:
    """A model from a local file: safetensors or a state dict with ``--arch``, TorchScript, or a
    pickled module with ``--trust-checkpoint``."""
    if arch is not None:
        if path.suffix not in (".safetensors", ".pt", ".pth", ".bin"):
            raise ModelLoadError(f"{path}: weights must be .safetensors, .pt, .pth or .bin")
        return load_model(arch, weights=path, trust_checkpoint=trust)
    if path.suffix == ".safetensors":
        raise ModelLoadError(
            f"{path} holds weights only; say which architecture they belong to with --arch "
            "(a zoo name, torchvision:NAME or timm:NAME)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception:  # noqa: BLE001 - not a TorchScript archive
        scripted = None
    if scripted is not None:
        return LoadedModel(scripted.eval(), str(path), _generic_preprocess(input_size),
                           mean=IMAGENET_MEAN, std=IMAGENET_STD)
    loaded = _safe_torch_load(path, trust)
    if isinstance(loaded, nn.Module):
        return LoadedModel(loaded.eval(), str(path), _generic_preprocess(input_size),
                           mean=IMAGENET_MEAN, std=IMAGENET_STD)
    raise ModelLoadError(
        f"{path} holds a state dict, not a model; say which architecture it belongs to with "
        "--arch (a zoo name, torchvision:NAME or timm:NAME)"
    )
