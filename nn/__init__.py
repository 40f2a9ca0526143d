"""nn: neural-network building blocks (CS231n-style layers, modules, optimizers) on top of fastconv."""
