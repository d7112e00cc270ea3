"""Motion priors and the warping primitives they share with frame interpolation."""
