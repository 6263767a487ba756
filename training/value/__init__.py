"""Customer value: spend over the next horizon (LightGBM two-part model), its peers (last-period
spend, historical rate, BG/NBD + Gamma-Gamma) and PRODUCT.md's "Customer value" protocol."""
