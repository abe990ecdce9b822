"""Model files shipped with semlens (safetensors weights and their model cards)."""
