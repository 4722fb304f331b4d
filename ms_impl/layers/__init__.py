from ms_impl.layers.basic import (GELU, Conv2d, Conv3d, Embedding, GroupNorm, Identity, LayerNorm, Linear, RMSNorm,
                                  SiLU, set_compute_dtype, set_conv_impl)
from ms_impl.layers.attention import scaled_dot_product_attention

__all__ = ["Linear", "LayerNorm", "RMSNorm", "GroupNorm", "Conv2d", "Conv3d", "Embedding", "GELU", "SiLU",
           "Identity", "scaled_dot_product_attention", "set_compute_dtype", "set_conv_impl"]
