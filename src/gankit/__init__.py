"""gankit: train, sample and evaluate GANs from one config file."""

__version__ = "0.1.0"
