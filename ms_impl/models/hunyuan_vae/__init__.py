"""HunyuanVideo causal 3D VAE (Open-Sora 2.0): ``AutoencoderKLCausal3D`` and its blocks."""
