"""The IR (program: networks per term), tensor types, the equivariance checker (check, exact) and
derivatives as diagrams (grad)."""
