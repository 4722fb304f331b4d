"""Open-Sora VAEs: the diffusers 2D ``AutoencoderKL``, the v1.2 temporal VAE and the v1.2 video pipeline."""
