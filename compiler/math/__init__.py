"""The mathematics: exact constant tables, the reference einsum evaluator, characters, spherical
harmonics and Wigner matrices, symmetric traceless tensors."""
