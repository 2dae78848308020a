"""Planning: plan (contractions, cost model), fuse (fused polynomials), emit (typed emit program),
fnemit (diagrams with function nodes as emit-program functions)."""
