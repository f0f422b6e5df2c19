# Third-party assets come through the registry (tests/sample_assets.py): from the mirror named by
# CEST_ASSETS_MIRROR (the Makefile sets it when ../shared/assets exists), else downloaded from upstream.

# Real frames through the preprocessing pipeline, shared by the model tests (session fixture).
from sample_frames import sample_frames  # noqa: F401
