"""lunar_exp: Hydra-configured LLM unlearning experiments built around LUNAR."""

__version__ = "0.1.0"
