"""Task environments of the armvla suite, registered with gymnasium by versioned id."""

from pathlib import Path

# MJCF scenes and the arm they include (sim/assets).
ASSETS = Path(__file__).resolve().parent.parent / "assets"
