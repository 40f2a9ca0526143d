"""`fastconv bench`: every backend (and PyTorch) timed side by side, results checked, baselines compared."""
from .command import configure, run

__all__ = ["configure", "run"]
