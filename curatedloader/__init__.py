"""curatedloader: online data curation for PyTorch training."""
from .history import LossHistory
from .loader import CuratedLoader
from .schedules import Always, Early, Schedule, Steps
from .scores import Scorer, Scores
from .selection import JEST, Selector, TopK, Uniform
from .stats import LoaderStats

__all__ = [
    "CuratedLoader", "LossHistory", "JEST", "TopK", "Uniform", "Selector", "Always", "Steps", "Early", "Schedule",
    "Scores", "Scorer", "LoaderStats",
]
