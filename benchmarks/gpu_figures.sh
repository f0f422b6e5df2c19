#!/usr/bin/env bash
# Every GPU figure of the project, on a machine with one CUDA GPU (and nvdiffrast installed, for its rows).
#
#   benchmarks/gpu_figures.sh OUT_DIR [SECTION...]      SECTION: tests benches train (default: all three)
#   DATA=data/clips benchmarks/gpu_figures.sh gpu-figures train
#
# tests:   the CUDA tests (renderer and training step on the GPU against the CPU; nvdiffrast against PyTorch).
# benches: rasterizer and renderer (PyTorch vs nvdiffrast), the training step at 224 px (bf16 vs fp32,
#          nvdiffrast vs PyTorch rasterizer; images/s, peak GPU memory), FAN landmarks batched on the GPU.
# train:   jobs/train.py on Ray Train, one GPU worker, jobs/configs/voxceleb.yaml (bf16, 224 px, 128 images a
#          step) on DATA (the output of `make preprocess`); its progress lines give images/s, data wait and
#          peak GPU memory.
# Writes one file per section into OUT_DIR.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_figures.sh OUT_DIR [tests] [benches] [train]}
shift
sections=${*:-tests benches train}
python=${PYTHON:-python3}
mkdir -p "$out"
status=0

for section in $sections; do
  case $section in
    tests)
      $python -m pytest -q -rs -p no:cacheprovider tests/test_raster.py tests/test_render.py tests/test_step.py \
        -k cuda 2>&1 | tee "$out/cuda_tests.log" || status=1
      ;;
    benches)
      {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        for backend in torch nvdiffrast; do
          $python benchmarks/bench_raster.py --device cuda --backend $backend --runs 20
        done
        $python benchmarks/bench_render.py
        $python benchmarks/bench_train_step.py --device cuda --batch 128 --steps 10 --sizes 224 \
          --precisions bf16 fp32 --raster-backends nvdiffrast torch
        $python benchmarks/bench_fan.py --device cuda --faces 512 --batch-sizes 1 16 64 128 256
      } 2>&1 | tee "$out/benches.log" || status=1
      ;;
    train)
      runs=$(mktemp -d)
      MLFLOW_TRACKING_URI=sqlite:///$runs/mlflow.db $python jobs/train.py --data "${DATA:?DATA=preprocessed clips}" \
        --config jobs/configs/voxceleb.yaml --steps "${STEPS:-300}" --workers 1 --gpus-per-worker 1 \
        --cpus-per-worker 2 --name gpu-figures --storage "$runs" --set train.log_every=50 --max-failures 0 \
        2>&1 | tee "$out/train.log" || status=1
      ;;
    *) echo "unknown section $section (tests, benches, train)"; exit 2 ;;
  esac
done
exit $status
