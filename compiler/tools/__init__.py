"""Tools over the compiler: basis enumeration, proof certificates, pictures."""
