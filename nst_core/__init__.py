"""Pure-torch Gatys et al. style-transfer engine: VGG features, losses, batched optimisation. No Ray, no fsspec."""
