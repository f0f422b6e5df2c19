"""CEST: self-supervised 3D face reconstruction via conditional estimation (plain PyTorch library)."""
