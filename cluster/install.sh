#!/usr/bin/env bash
# Install the project into the current Python the way `make setup` installs it into .venv: the system
# libraries OpenCV needs, the pinned torch (a CUDA build by default: cluster nodes have GPUs), then the
# project itself with its pinned dependencies (Ray among them). cluster/Dockerfile and the cluster-launcher
# YAMLs (aws.yaml, gcp.yaml) run this script, so a cluster node is installed exactly like the image.
#
#   cluster/install.sh [PROJECT_DIR]        (default: the checkout this script is in)
#   env: PYTHON (python), TORCH (the Makefile's pin), TORCH_INDEX (CUDA 12.8 wheels; empty: PyPI)
set -euo pipefail

PROJECT_DIR=${1:-$(cd "$(dirname "$0")/.." && pwd)}
PYTHON=${PYTHON:-python}
TORCH=${TORCH:-torch==2.13.0}  # the Makefile's TORCH pin (tests/test_cluster.py checks they agree)
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cu128}

# opencv-python (pulled in by face-alignment) links libGL and glib.
if command -v apt-get > /dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libgl1 libglib2.0-0
fi

"$PYTHON" -m pip install -q "$TORCH" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
"$PYTHON" -m pip install -q -e "$PROJECT_DIR"
