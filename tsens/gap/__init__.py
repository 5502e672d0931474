"""Test loss and accuracy without test labels: the pieces of ``estimate-gap``.

* :mod:`.features`: one checkpoint's training and test passes reduced to features, and the
  truth (test loss and accuracy) kept apart;
* :mod:`.estimators`: each estimator, a pure function of the features;
* :mod:`.calibration`: the calibrated estimator's ridge models, fitted with whole runs held out;
* :mod:`.estimates`: every estimator applied to the scored checkpoints, a row each;
* :mod:`.evaluation`: how good each estimator is, and how well each feature ranks the gap.

The command itself (the passes over many checkpoints, locally or on Ray) is
:func:`tsens.commands.estimate_gap`.
"""

from .calibration import Calibration
from .estimates import GapResult
from .features import CheckpointFeatures

__all__ = ["Calibration", "CheckpointFeatures", "GapResult"]
