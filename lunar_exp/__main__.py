"""Entry point: ``python -m lunar_exp [overrides]`` (Hydra)."""

import sys

import hydra
from omegaconf import DictConfig

from lunar_exp.errors import USER_ERRORS, user_error_message


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one experiment; configuration and data errors end with one clear line and exit 2."""
    from lunar_exp.pipeline import run

    try:
        run(cfg)
    except USER_ERRORS as err:
        print(f"lunar_exp: error: {user_error_message(err)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
