"""Image encoders for the pruner: an open_clip model from a local checkpoint, or any callable."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from torch import nn


def load_encoder(name: str, checkpoint: str | os.PathLike | None = None, *, device: str | None = None) -> nn.Module:
    """An open_clip model built offline: `name` is a built-in config ("ViT-B-32") or the path of a JSON
    config file (open_clip's model-config format); weights come from the local `checkpoint` file.
    No checkpoint gives random weights (for tests), with a warning.

    >>> model = load_encoder("ViT-B-32", "ckpt/vit_b_32.pt")
    """
    import open_clip

    if name.endswith(".json"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"encoder: no open_clip config file at {name}")
        open_clip.add_model_config(name)  # registered under the file's stem
        name = Path(name).stem
    if name not in open_clip.list_models():
        raise ValueError(f"encoder: {name!r} is neither a built-in open_clip config nor a .json config file")
    if checkpoint is None:
        warnings.warn(f"encoder {name}: no checkpoint, using random weights", stacklevel=2)
    elif not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint: no file at {checkpoint}")
    return open_clip.create_model(name, pretrained=os.fspath(checkpoint) if checkpoint else None,
                                  device=device or "cpu")


def as_encoder(encoder) -> tuple[Callable, Callable | None, nn.Module | None]:
    """(batch function, per-image preprocess or None, module or None) for what `encode` accepts:
    a config name, a (name, checkpoint) pair, an open_clip model, or a callable on a batch tensor."""
    if isinstance(encoder, (str, tuple)):
        name, checkpoint = (encoder, None) if isinstance(encoder, str) else encoder
        encoder = load_encoder(name, checkpoint)
    if hasattr(encoder, "encode_image") and hasattr(getattr(encoder, "visual", None), "preprocess_cfg"):
        from open_clip.transform import PreprocessCfg, image_transform_v2

        preprocess = image_transform_v2(PreprocessCfg(**encoder.visual.preprocess_cfg), is_train=False)
        return encoder.encode_image, preprocess, encoder
    if not callable(encoder):
        raise ValueError(f"encoder: expected an open_clip name, (name, checkpoint), model or callable, "
                         f"got {type(encoder).__name__}")
    return encoder, None, encoder if isinstance(encoder, nn.Module) else None
