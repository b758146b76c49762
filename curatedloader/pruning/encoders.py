"""Image encoders for the pruner: an open_clip model from a local checkpoint, or any callable."""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .cache import digest, file_digest, stable_repr


def load_encoder(name: str, checkpoint: str | os.PathLike | None = None, *, device: str | None = None,
                 seed: int = 0) -> nn.Module:
    """An open_clip model built offline: `name` is a built-in config ("ViT-B-32") or the path of a JSON
    config file (open_clip's model-config format); weights come from the local `checkpoint` file.
    No checkpoint gives random weights drawn from `seed` (to try the pipeline offline), with a warning.

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
    with torch.random.fork_rng(devices=[]):  # random weights from `seed`, the caller's RNG untouched
        torch.manual_seed(seed)
        return open_clip.create_model(name, pretrained=os.fspath(checkpoint) if checkpoint else None,
                                      device=device or "cpu")


def encoder_identity(encoder) -> dict:
    """What makes an encoder's features what they are, for the run directory's cache key: the config
    (a JSON config by its content) and the weights (a checkpoint by its sha256, random weights by their
    seed, a model by a digest of its state), or a plain callable by its qualified name and code.

    >>> encoder_identity(("ViT-B-32", None))
    {'encoder': 'ViT-B-32', 'weights': 'random-init seed=0'}
    """
    if isinstance(encoder, (str, tuple)):
        name, checkpoint = (encoder, None) if isinstance(encoder, str) else encoder
        out = {"encoder": os.fspath(name)}
        if str(name).endswith(".json") and Path(name).is_file():
            out["config"] = "sha256:" + file_digest(name)
        if checkpoint is None:
            out["weights"] = "random-init seed=0"
        elif Path(checkpoint).is_file():
            out["weights"] = "sha256:" + file_digest(checkpoint)
        return out
    if isinstance(encoder, nn.Module):
        h = hashlib.sha256()
        for key, value in encoder.state_dict().items():
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        cfg = getattr(getattr(encoder, "visual", None), "preprocess_cfg", None)
        return {"encoder": type(encoder).__qualname__, "weights": "state:" + h.hexdigest()[:32],
                **({"preprocess": cfg} if cfg else {})}
    code = getattr(encoder, "__code__", None)
    name = getattr(encoder, "__qualname__", type(encoder).__qualname__)
    ident = {"encoder": f"{getattr(encoder, '__module__', '')}.{name}"}
    if code is not None:
        ident["code"] = digest(code.co_code.hex(), stable_repr(code.co_consts))
    return ident


def as_encoder(encoder, device: str | None = None) -> tuple[Callable, Callable | None, nn.Module | None]:
    """(batch function, per-image preprocess or None, module or None) for what `encode` accepts:
    a config name, a (name, checkpoint) pair, an open_clip model, or a callable on a batch tensor."""
    if isinstance(encoder, (str, tuple)):
        name, checkpoint = (encoder, None) if isinstance(encoder, str) else encoder
        encoder = load_encoder(name, checkpoint, device=device)
    if hasattr(encoder, "encode_image") and hasattr(getattr(encoder, "visual", None), "preprocess_cfg"):
        from open_clip.transform import PreprocessCfg, image_transform_v2

        preprocess = image_transform_v2(PreprocessCfg(**encoder.visual.preprocess_cfg), is_train=False)
        return encoder.encode_image, preprocess, encoder
    if not callable(encoder):
        raise ValueError(f"encoder: expected an open_clip name, (name, checkpoint), model or callable, "
                         f"got {type(encoder).__name__}")
    return encoder, None, encoder if isinstance(encoder, nn.Module) else None
