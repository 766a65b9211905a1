"""tlab: pretrain, fine-tune and evaluate transformer language models from the command line."""

__version__ = "0.2.0"
