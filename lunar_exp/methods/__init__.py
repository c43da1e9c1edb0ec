"""Unlearning methods, one per file; configs in conf/method/ select them by ``_target_``."""

from omegaconf import DictConfig, OmegaConf

# Keys of a method config read by the pipeline, not passed to the method's constructor.
PIPELINE_KEYS = ("requests",)


def build_method(node: DictConfig):
    """Instantiate a ``conf/method/`` node without the pipeline's own keys (``requests``)."""
    from hydra.utils import instantiate

    resolved = OmegaConf.to_container(node, resolve=True)
    return instantiate({k: v for k, v in resolved.items() if k not in PIPELINE_KEYS})
