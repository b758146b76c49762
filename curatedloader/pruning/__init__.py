"""Offline coreset pruning: encode with a surrogate model, score, deduplicate, select, reweight classes.

>>> feats = encode(ImageFolder("data/train"), ("ViT-B-32", "vit_b_32.pt"), out="runs/prune")
>>> drop = near_duplicates(feats, eps=0.05)
>>> sel = select(score(feats, "prototype"), 0.5, strategy="ccs", groups=labels, drop=drop)
>>> save_keep("runs/prune/keep.txt", feats.ids[sel["indices"]])
"""
from .dedup import near_duplicates
from ..weights import sample_weights, weighted_mean
from .dro import GroupDRO, group_mean
from .encoders import load_encoder
from .features import Features, encode
from ..keeplist import load_keep, save_keep
from .scoring import score
from .select import select

__all__ = ["Features", "GroupDRO", "encode", "group_mean", "load_encoder", "load_keep", "near_duplicates",
           "sample_weights", "save_keep", "score", "select", "weighted_mean"]
