import os
from pathlib import Path

# Tests read third-party assets from the local mirror beside the checkout unless one is configured.
os.environ.setdefault("CEST_ASSETS_MIRROR", str(Path(__file__).resolve().parents[2] / "shared" / "assets"))

# Real frames through the preprocessing pipeline, shared by the model tests (session fixture).
from sample_frames import sample_frames  # noqa: E402,F401
from sample_clips import sample_clips  # noqa: E402,F401
