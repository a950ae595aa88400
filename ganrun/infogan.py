"""Old path of ``ganrun.modules.infogan`` (configs saved in older checkpoints name it)."""
from ganrun.modules.infogan import (  # noqa: F401
    InfoGANLatent,
    InfoGANModule,
    QHead,
    best_match_accuracy,
    categorical_nll,
    gaussian_nll,
)
