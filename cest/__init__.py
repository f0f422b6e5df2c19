"""CEST: self-supervised 3D face reconstruction via conditional estimation (ICCV 2021)."""
