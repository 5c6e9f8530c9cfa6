"""Where the config tree lives, for every entry point's Hydra."""

from pathlib import Path

# Inside the package: a symlink to the repo's top-level conf/ in a checkout, a copy of it in a
# wheel (pyproject.toml's package-data), so every entry point runs from any directory.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
