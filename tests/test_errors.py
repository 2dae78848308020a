"""Every kind of bad input, its message, position and exit code (one table, one test; lark's test_errors style)."""

import re

import pytest

from compiler.api import check_source, checked_program
from compiler.errors import MAX_ERRORS, DiagError, DiagErrors, each_error

# (name, source, exit code, line, column, start of the message)
ERRORS = [
    ('syntax_missing_brace', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n', 2, 2, 18, "unexpected end of file; expected '}', a name"),
    ('syntax_bad_char', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] @ a[i]\n}\n', 2, 2, 14, "unexpected character '@'"),
    ('syntax_missing_arrow', 'diagram f(a: vec) s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 19, "unexpected 's'; expected '->', end of line"),
    ('syntax_dangling_op', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i] +\n}\n', 2, 3, 1, "unexpected '}'; expected '(', '+', '-', a name, a number, cg"),
    ('syntax_group_unknown', 'group U1\n', 2, 1, 7, "unknown group 'U1' (known: O3, SO3)"),
    ('syntax_group_twice', 'group O3\ngroup SO3\n', 2, 2, 7, 'the group is declared twice'),
    ('syntax_div_zero', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i] / 0\n}\n', 2, 2, 21, 'division by zero'),
    ('syntax_div_tensor', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] / a[i]\n}\n', 1, 2, 16, "the argument of 1/x (a division), 'a[i]', has rank 1 (free g"),
    ('type_unknown', 'diagram f(a: vector) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 14, "unknown type 'vector' (known: scalar, pscalar, vec, axial, c"),
    ('type_bad_grading', 'diagram f(X: cart2(0e+1e)) -> s: scalar {\n    s = X[i,i]\n}\n', 2, 1, 14, "'cart2' has irreducible parts l = 0, 1, 2; write their parit"),
    ('type_weight_no_axes', 'diagram f(W: weight) -> s: scalar {\n    s = W\n}\n', 2, 1, 14, "'weight' needs at least one channel axis, e.g. weight[c,d]"),
    ('type_arity', 'diagram f(X: cart2) -> s: scalar {\n    s = X[i]\n}\n', 2, 2, 9, "'X' of type cart2 has 2 axes (2 geometric) but 1 index is gi"),
    ('type_lhs_arity', 'diagram f(a: vec) -> s: scalar {\n    s[i] = a[i]\n}\n', 2, 2, 5, "'s' of type scalar has 0 axes (0 geometric) but 1 index is g"),
    ('type_mixed_index', 'diagram f(a: vec[c], b: vec) -> s: scalar {\n    s = a[c,i] b[c]\n}\n', 2, 2, 18, "index 'c' is used for a Cartesian leg of b and for channel a"),
    ('type_channel_mismatch', 'diagram f(a: vec[c], b: vec[d]) -> s: scalar {\n    s = a[c,i] b[c,i]\n}\n', 2, 2, 18, "index 'c' joins channel axis 'd' of b with channel axis 'c' "),
    ('type_sph_cart', 'diagram f(a: vec, b: sph(2e)) -> s: scalar {\n    s = a[i] b[i]\n}\n', 2, 2, 16, "index 'i' joins a spherical l=2 leg of b with a Cartesian le"),
    ('type_output_weight', 'diagram f(a: vec) -> W: weight[c] {\n    W[c] = a[i] a[i]\n}\n', 2, 1, 25, "output 'W' cannot be a weight: weights are inputs only"),
    ('name_unknown_tensor', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] b[i]\n}\n', 2, 2, 14, "unknown tensor 'b' in diagram 'f'"),
    ('name_keyword', 'diagram f(class: vec) -> s: scalar {\n    s = class[i] class[i]\n}\n', 2, 1, 11, "tensor 'class' is a reserved word (Python, C/CUDA or diagc)"),
    ('name_keyword_kernels', 'diagram f(kernels: vec) -> s: scalar {\n    s = kernels[i] kernels[i]\n}\n', 2, 1, 11, "tensor 'kernels' is a reserved word (Python, C/CUDA or diagc)"),
    ('name_underscore', 'diagram _f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 9, "diagram '_f': names starting with '_' are reserved for gener"),
    ('name_c_keyword', 'diagram f(a: vec) -> int: scalar {\n    int = a[i] a[i]\n}\n', 2, 1, 22, "tensor 'int' is a reserved word (Python, C/CUDA or diagc)"),
    ('name_twice', 'diagram f(a: vec, a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 19, "'a' is declared twice in diagram 'f'"),
    ('name_not_assigned', 'diagram f(a: vec) -> (s: scalar, t: scalar) {\n    s = a[i] a[i]\n}\n', 2, 1, 34, "output 't' of diagram 'f' is never assigned"),
    ('name_assign_input', 'diagram f(a: vec) -> s: scalar {\n    a[i] = a[i]\n}\n', 2, 2, 5, "'a' is an input of diagram 'f'; only outputs are assigned"),
    ('name_used_before', 'diagram f(a: vec) -> (s: scalar, t: scalar) {\n    s = t a[i] a[i]\n    t = a[i] a[i]\n}\n', 2, 2, 9, "output 't' is used before it is assigned"),
    ('name_diagram_twice', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\ndiagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 4, 9, "diagram 'f' is defined twice (first at line 1)"),
    ('lhs_repeated', 'diagram f(X: cart2) -> Y: cart2 {\n    Y[i,i] = X[i,i]\n}\n', 2, 2, 9, "index 'i' appears twice on the left-hand side"),
    ('eq_hyperedge', 'diagram f(a: vec, b: vec, c: vec) -> s: scalar {\n    s = a[i] b[i] c[i]\n}\n', 1, 2, 19, "in 's' of diagram 'f', term 'a[i] b[i] c[i]': geometric inde"),
    ('eq_dangling', 'diagram f(a: vec, b: vec) -> s: scalar {\n    s = a[i] b[j]\n}\n', 1, 2, 9, "in 's' of diagram 'f', term 'a[i] b[j]': index 'i' is on one"),
    ('eq_missing_free', 'diagram f(a: vec) -> v: vec {\n    v[i] = a[j] a[j]\n}\n', 1, 2, 12, "in 'v' of diagram 'f', term 'a[j] a[j]': output index 'i' ap"),
    ('fn_arg_rank', 'diagram f(a: vec) -> s: scalar {\n    s = silu(a[i])\n}\n', 1, 2, 14, "the argument of silu, 'a[i]', has rank 1 (free geometric ind"),
    ('fn_arg_rank_user', 'diagram f(X: cart2, phi: fn(2 -> 1)) -> s: scalar {\n    s = phi(X[i,i], X[i,j] X[j,k])\n}\n', 1, 2, 21, "argument 2 of phi, 'X[i,j] X[j,k]', has rank 2 (free geometr"),
    ('fn_arg_pseudoscalar', 'diagram f(a: vec, b: vec, c: vec) -> s: scalar {\n    s = sigmoid(eps[i,j,k] a[i] b[j] c[k])\n}\n', 1, 2, 17, "the argument of sigmoid, 'eps[i,j,k] a[i] b[j] c[k]', is an "),
    ('fn_arg_axial', 'diagram f(a: vec, b: axial) -> s: scalar {\n    s = exp(a[i] b[i])\n}\n', 1, 2, 13, "the argument of exp, 'a[i] b[i]', is an odd scalar (a pseudo"),
    ('fn_arg_pseudoscalar_user', 'diagram f(a: vec, b: axial, phi: fn(1 -> 1)) -> s: scalar {\n    s = phi(a[i] b[i])\n}\n', 1, 2, 13, "argument 1 of phi, 'a[i] b[i]', is an odd scalar (a pseudosc"),
    ('fn_unknown', 'diagram f(a: vec) -> s: scalar {\n    s = relu(a[i] a[i])\n}\n', 2, 2, 9, "unknown function 'relu' in diagram 'f' (built-ins: silu, sig"),
    ('fn_tensor_called', 'diagram f(a: vec, s0: scalar) -> s: scalar {\n    s = s0(a[i] a[i])\n}\n', 2, 2, 9, "'s0' is a tensor, not a function"),
    ('fn_used_as_tensor', 'diagram f(a: vec, phi: fn(1 -> 1)) -> s: scalar {\n    s = phi a[i] a[i]\n}\n', 2, 2, 9, "'phi' is a function (fn(1 -> 1)): apply it to invariants, e."),
    ('fn_arity', 'diagram f(a: vec, phi: fn(2 -> 1)) -> s: scalar {\n    s = phi(a[i] a[i])\n}\n', 2, 2, 9, "'phi' is declared fn(2 -> 1): it takes 2 arguments but 1 is "),
    ('fn_builtin_arity', 'diagram f(a: vec) -> s: scalar {\n    s = tanh(a[i] a[i], 1)\n}\n', 2, 2, 9, "'tanh' takes 1 argument but 2 are given"),
    ('fn_no_select', 'diagram f(a: vec, phi: fn(1 -> 3)) -> s: scalar {\n    s = phi(a[i] a[i])\n}\n', 2, 2, 9, "'phi' gives 3 values: pick one by number, phi(...)[k] with k"),
    ('fn_select_range', 'diagram f(a: vec, phi: fn(1 -> 3)) -> s: scalar {\n    s = phi(a[i] a[i])[3]\n}\n', 2, 2, 9, "'phi(...)[3]': phi gives 3 values (0 to 2)"),
    ('fn_output', 'diagram f(a: vec) -> phi: fn(1 -> 1) {\n    phi = a[i] a[i]\n}\n', 2, 1, 27, "output 'phi' cannot be a function: functions are inputs only"),
    ('fn_type_channels', 'diagram f(a: vec, phi: fn(1 -> 1)[c]) -> s: scalar {\n    s = phi(a[i] a[i])\n}\n', 2, 1, 24, 'a function argument has no channel axes: it applies elementw'),
    ('fn_type_arrow', 'diagram f(a: vec, phi: vec(1 -> 1)) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 24, "'vec(n -> m)': only 'fn' takes '(n -> m)'"),
    ('fn_arg_mixed_parity', 'diagram f(a: vec, b: vec, c: vec) -> s: scalar {\n    s = sqrt(1 + eps[i,j,k] a[i] b[j] c[k])\n}\n', 1, 2, 18, "the argument of sqrt, '1 + eps[i,j,k] a[i] b[j] c[k]', is no"),
    ('fn_in_basis', 'basis b(phi: fn(1 -> 1), a: vec) -> s: scalar\n', 2, 1, 14, "input 'phi' of basis 'b' is a function: a basis enumerates co"),
    ('eq_free_mismatch', 'diagram f(a: vec, b: vec) -> v: vec {\n    v[i] = a[i] + b[j]\n}\n', 1, 2, 19, "in 'v' of diagram 'f', term 'b[j]': index 'j' is on one leg "),
    ('eq_parity', 'diagram f(a: vec, b: vec) -> c: vec {\n    c[i] = eps[i,j,k] a[j] b[k]\n}\n', 1, 2, 12, "in 'c' of diagram 'f', term 'eps[i,j,k] a[j] b[k]': the term"),
    ('eq_symmetry', 'diagram f(X: cart2) -> Y: sym2 {\n    Y[i,j] = X[i,j]\n}\n', 1, 2, 5, "output 'Y' of diagram 'f' is declared sym2 but its right-han"),
    ('eq_traceless', 'diagram f(X: sym2) -> Y: sym2t {\n    Y[i,j] = X[i,j]\n}\n', 1, 2, 5, "output 'Y' of diagram 'f' is declared sym2t but its right-ha"),
    ('eq_skew', 'diagram f(X: sym2) -> Y: skew2 {\n    Y[i,j] = X[i,k] X[k,j]\n}\n', 1, 2, 5, "output 'Y' of diagram 'f' is declared skew2 but its right-ha"),
    ('eq_graded', 'diagram f(M: cart2(0e+1o+2e), Y: cart2(0e+1o+2e)) -> C: cart2(0e+1o+2e) {\n    C[i,j] = Y[i,k] M[k,j]\n}\n', 1, 2, 14, "in diagram 'f': the antisymmetric (1o) part of 'C' does not "),
    ('syntax_number_before_name', 'diagram f(a: vec) -> s: scalar {\n    s = 2x a[i] a[i]\n}\n', 2, 2, 9, "'2x': a number written directly before a name"),
    ('syntax_number_before_e', 'diagram f(a: vec, e: scalar) -> s: scalar {\n    s = 1e a[i] a[i]\n}\n', 2, 2, 9, "'1e': a number written directly before a name"),
    ('syntax_decimal_before_name', 'diagram f(a: vec) -> s: scalar {\n    s = 2.5E+2a a[i] a[i]\n}\n', 2, 2, 9, "'2.5E+2a': a number written directly before a name"),
    ('syntax_huge_exponent', 'diagram f(a: vec) -> s: scalar {\n    s = 1e-99 a[i] a[i]\n}\n', 2, 2, 9, "the exponent of 1e-99 is beyond ±30"),
    ('syntax_misspelt_keyword', 'diagrm f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 1, "unexpected 'diagrm'; expected ';', 'basis', 'diagram', 'group', end of line"),
    ('syntax_misspelt_group', 'group 03\n', 2, 1, 7, "unexpected '03'; expected a name"),
    ('syntax_group_case', 'group o3\n', 2, 1, 7, "unknown group 'o3' (known: O3, SO3)"),
    ('type_misspelt', 'diagram f(X: symmetric2) -> s: scalar {\n    s = X[i,i]\n}\n', 2, 1, 14, "unknown type 'symmetric2'"),
    ('type_misspelt_vector', 'diagram f(a: vector) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 14, "unknown type 'vector'"),
    ('type_weight_arguments', 'diagram f(W: weight(3)[c]) -> s: scalar[c] {\n    s[c] = W[c]\n}\n', 2, 1, 14, "'weight' takes no arguments"),
    ('type_weight_geometric', 'diagram f(a: vec[c], W: weight[c,d]) -> y: vec[d] {\n    y[d,i] = W[i,j] a[c,j]\n}\n', 2, 2, 25, "index 'j' is used for a Cartesian leg of a and for channel a"),
    ('type_symt_no_rank', 'diagram f(S: symt) -> s: scalar {\n    s = S[i,i,j]\n}\n', 2, 1, 14, "'symt' needs a rank, e.g. symt(3)"),
    ('eq_symt_traceless', 'diagram f(v: vec) -> U: symt(3) {\n    U[i,j,k] = v[i] v[j] v[k]\n}\n', 1, 2, 5, "output 'U' of diagram 'f' is declared symt(3) but its right-"),
    ('eq_symt_symmetric', 'diagram f(v: vec, X: cart2) -> U: symt(3) {\n    U[i,j,k] = X[i,j] v[k]\n}\n', 1, 2, 5, "output 'U' of diagram 'f' is declared symt(3) but its right-"),
    ('basis_channels', 'basis b(x: sph(1o)[c]^2) -> y: sph(0e)\n', 2, 1, 7, "input 'x' has the channel axis c that the output (sph(0e)) lacks; a b"),
    ('basis_graded_mixed', 'basis b(x: 1o, X: cart2(0e+1o+2e)) -> y: 1o\n', 2, 1, 7, "input 'X' has the graded type cart2(0e+1o+2e); enumerate its"),
    ('name_misspelt_constant', 'diagram f(X: cart2) -> s: scalar {\n    s = kron[i,j] X[i,j]\n}\n', 2, 2, 9, "unknown tensor 'kron' in diagram 'f'"),
    ('name_misspelt_epsilon', 'diagram f(a: vec, b: vec) -> c: axial {\n    c[i] = epsilon[i,j,k] a[j] b[k]\n}\n', 2, 2, 12, "unknown tensor 'epsilon' in diagram 'f'"),
    ('name_misspelt_input', 'diagram f(alpha: vec) -> s: scalar {\n    s = alpah[i] alpha[i]\n}\n', 2, 2, 9, "unknown tensor 'alpah' in diagram 'f'"),
    ('name_misspelt_output', 'diagram f(a: vec) -> norm: scalar {\n    nrom = a[i] a[i]\n}\n', 2, 2, 5, "'nrom' is not a declared output of diagram 'f'"),
    ('name_reserved_lambda', 'diagram f(a: vec, lambda: scalar) -> s: scalar {\n    s = lambda a[i] a[i]\n}\n', 2, 1, 19, "tensor 'lambda' is a reserved word"),
    ('eq_index_misspelt', 'diagram f(a: vec, b: vec) -> T: cart2 {\n    T[i,j] = a[i] b[l]\n}\n', 1, 2, 19, "in 'T' of diagram 'f', term 'a[i] b[l]': index 'l' is on one"),
    ('eq_parity_scalar', 'diagram f(a: vec, b: vec, c: vec) -> s: scalar {\n    s = eps[i,j,k] a[i] b[j] c[k]\n}\n', 1, 2, 9, "in 's' of diagram 'f', term 'eps[i,j,k] a[i] b[j] c[k]': the"),
    ('eq_parity_rank2', 'diagram f(a: vec) -> T: cart2 {\n    T[i,j] = eps[i,j,k] a[k]\n}\n', 1, 2, 14, "in 'T' of diagram 'f', term 'eps[i,j,k] a[k]': the term is"),
    ('eq_parity_rank2_mixed', 'diagram f(a: vec, s: scalar) -> X: cart2 {\n    X[i,j] = a[i] a[j] + s eps[i,j,k] a[k]\n}\n', 1, 2, 26, "in 'X' of diagram 'f', term 's eps[i,j,k] a[k]': the term i"),
    ('eq_graded_fits', 'diagram f(X: cart2(0e+1o+2e)) -> C: cart2 {\n    C[i,j] = X[i,j]\n}\n', 1, 2, 14, "in diagram 'f': the antisymmetric (1e) part of 'C' does not "),
    ('eq_channel_missing', 'diagram f(a: vec[c]) -> s: scalar[c] {\n    s[c] = a[d,i] a[d,i]\n}\n', 1, 2, 12, "in 's' of diagram 'f', term 'a[d,i] a[d,i]': output channel "),
    ('type_irreps_malformed', 'diagram f(h: irreps(8x0e+4y1o)) -> s: scalar[8] {\n    s[u] = h.0e[u]\n}\n', 2, 1, 27, "unexpected 'y1o'; expected ')', '+', end of line"),
    ('type_irreps_bad_term', 'diagram f(h: irreps(8x0e+4x1)) -> s: scalar[8] {\n    s[u] = h.0e[u]\n}\n', 2, 1, 27, "unexpected 'x1'; expected ')', '+', end of line"),
    ('type_irreps_empty', 'diagram f(h: irreps) -> s: scalar[8] {\n    s[u] = h.0e[u]\n}\n', 2, 1, 14, "'irreps' needs its blocks, e.g. irreps(32x0e+16x1o+8x2e)"),
    ('type_irreps_zero_mul', 'diagram f(h: irreps(0x0e+4x1o)) -> s: scalar[8] {\n    s[u] = h.1o[u,m] h.1o[u,m]\n}\n', 2, 1, 14, 'multiplicity 0 of 0e is outside 1..1048576'),
    ('type_irreps_repeated', 'diagram f(h: irreps(8x0e+4x1o+8x0e)) -> s: scalar[8] {\n    s[u] = h.0e[u]\n}\n', 2, 1, 14, '0e appears twice; blocks are selected by their irrep, so eac'),
    ('type_irreps_channels', 'diagram f(h: irreps(8x0e)[c]) -> s: scalar[8] {\n    s[u] = h.0e[u]\n}\n', 2, 1, 14, "an irreps type takes no channel axes: each block's multiplic"),
    ('type_irreps_no_block', 'diagram f(h: irreps(8x0e+4x1o)) -> s: scalar[8] {\n    s[u] = h[u]\n}\n', 2, 2, 12, "'h' is irreps(8x0e+4x1o): select one of its blocks (8x0e, 4x"),
    ('type_irreps_missing_block', 'diagram f(h: irreps(8x0e+4x1o)) -> s: scalar[8] {\n    s[u] = h.2e[u,m] h.2e[u,m]\n}\n', 2, 2, 12, "'h' has no 2e block (its blocks: 8x0e, 4x1o)"),
    ('type_irreps_block_on_constant', 'diagram f(a: vec) -> s: scalar {\n    s = delta.1o[i,j] a[i] a[j]\n}\n', 2, 2, 9, "'delta' is not an irreps tensor: '.1o' selects a block of one"),
    ('type_irreps_not_irreps', 'diagram f(a: vec[c]) -> s: scalar[c] {\n    s[c] = a.1o[c,i] a[c,i]\n}\n', 2, 2, 12, "'a' is not an irreps tensor: '.1o' selects a block of one (d"),
    ('type_irreps_mul_mismatch', 'diagram f(h: irreps(8x0e+4x1o)) -> s: scalar[8] {\n    s[u] = h.0e[u] h.1o[u,m] h.1o[u,m]\n}\n', 2, 2, 25, "index 'u' joins channel axis '4' of h_1o with channel axis '"),
    ('type_irreps_leg_mismatch', 'diagram f(h: irreps(8x0e+4x1o)) -> s: scalar[8] {\n    s[u] = h.0e[u] h.1o[v,m]\n}\n', 1, 2, 20, "in 's' of diagram 'f', term 'h_0e[u] h_1o[v,m]': index 'm' i"),
    ('name_irreps_block_unassigned', 'diagram f(h: irreps(8x0e+4x1o)) -> o: irreps(8x0e+4x1o) {\n    o.0e[u] = h.0e[u]\n}\n', 2, 1, 36, "block 1o of irreps output 'o' of diagram 'f' is never assign"),
    ('eq_irreps_parity', 'diagram f(h: irreps(4x1o)) -> o: irreps(4x1o) {\n    o.1o[u,k] = cg(1,1,1)[i,j,k] h.1o[u,i] h.1o[u,j]\n}\n', 1, 2, 17, "in 'o_1o' of diagram 'f', term 'cg(1,1,1)[i,j,k] h_1o[u,i] h"),
    ('type_irreps_fixed_size', 'diagram f(h: irreps(8x0e), W: weight[4,2]) -> o: irreps(2x0e) {\n    o.0e[w] = W[u,w] h.0e[u]\n}\n', 2, 2, 27, "index 'u' joins channel axis '8' of h_0e with channel axis '"),
    ('type_irreps_basis', 'basis b(h: irreps(8x0e)) -> s: scalar\n', 2, 1, 12, 'a basis takes Cartesian and sph(lp) types, not irreps(8x0e):'),
    ('eq_graph_function_rank', 'diagram g(v: vec[n,c], src: edges[e,n], dst: edges[e,n]) -> w: vec[n,c] {\n    w[n,c,i] = dst[e,n] src[e,m] silu(v[m,c,i]) v[m,c,i]\n}\n', 1, 2, 39, "the argument of silu, 'v[m,c,i]', has rank 1 (free geometric index 'i')"),
    ('type_graph_function_stage', 'diagram g(v: vec[n,c], f: scalar[e,c], src: edges[e,n]) -> w: vec[n,c] {\n    w[n,c,i] = tanh(f[e,c]) f[e,c] v[n,c,i]\n}\n', 2, 2, 16, "in 'w' of graph diagram 'g', term 'tanh(f[e,c]) f[e,c] v[n,c,i]': the sum over edges 'e' has no edge list"),
    ('type_graph_function_argument_gather', 'diagram g(v: vec[n,c], f: scalar[e,c], dst: edges[e,n]) -> w: vec[n,c] {\n    w[n,c,i] = dst[e,n] tanh(f[e,c] v[m,c,k] v[m,c,k]) v[n,c,i]\n}\n', 2, 2, 30, "in 'tanh(f[e,c] v[m,c,k] v[m,c,k])' of graph diagram 'g', term 'f[e,c] v[m,c,k] v[m,c,k]': node index 'm' is on no edge list"),
    ('type_graph_function_shared_argument', 'diagram g(x: scalar[c], f: scalar[e,c], v: vec[n,c], src: edges[e,n], dst: edges[e,n]) -> w: vec[n,c] {\n    w[n,c,i] = dst[e,n] tanh(x[c]) silu(f[e,c]) src[e,m] v[m,c,i]\n}\n', 2, 2, 30, "'tanh(x[c])' is neither per node nor per edge (channel axes ['c']); in a graph diagram a function applies per node or per edge"),
    ('eq_function_stage_parity', 'diagram gate(a: vec, b: vec) -> v: vec {\n    v[i] = tanh(a[j] a[j]) eps[i,j,k] a[j] b[k]\n}\n', 1, 2, 12, "in 'v' of diagram 'gate', term 'tanh(a[j] a[j]) eps[i,j,k] a[j] b[k]': the term is even (+1) under inversion"),
]


#: the ``help:`` line of the rows that have one (a fix the user can apply)
HELP = {
    'type_irreps_no_block': 'e.g. h.0e[u]: channel u of size 8',
    'name_irreps_block_unassigned': 'assign it: o.1o[...] = ...',
    'eq_irreps_parity': "declare 'o: irreps(4x1e)' (or 'group SO3' if reflections do not matter)",
    'syntax_number_before_name': "write '2 x' (or '2 * x') for a product",
    'syntax_number_before_e': "write '1 e' (or '1 * e') for a product; scientific notation takes digits after e, e.g. 1e-3",
    'syntax_misspelt_keyword': "did you mean 'diagram'?",
    'syntax_group_case': "did you mean 'O3'?",
    'type_unknown': "did you mean 'vec'?",
    'type_misspelt': "did you mean 'sym2'?",
    'type_misspelt_vector': "did you mean 'vec'?",
    'type_weight_arguments': "a learnable matrix acting on Cartesian legs is not equivariant",
    'type_weight_geometric': "(a 3x3 matrix W[i,j]) does not commute with rotations and is not equivariant; mix "
                             "channels instead (Y[d,i] = W[c,d] X[c,i])",
    'name_misspelt_constant': "did you mean 'delta'?",
    'name_misspelt_epsilon': "did you mean 'eps'?",
    'name_misspelt_input': "did you mean 'alpha'?",
    'name_misspelt_output': "did you mean 'norm'?",
    'name_reserved_lambda': "rename it, e.g. 'lambda_'",
    'eq_index_misspelt': "did you mean 'j'?",
    'eq_missing_free': None,  # no unused index to suggest
    'eq_parity': "declare 'c: axial'",
    'eq_parity_scalar': "declare 's: pscalar'",
    'eq_parity_rank2': "declare 'T: pcart(2)'",
    'eq_parity_rank2_mixed': "declare 'X: cart2(0e+1o+2e)'",  # terms of both parities: not pcart(2)
    'eq_graded_fits': "declare 'C: cart2(0e+1o+2e)'",
    'type_graph_function_shared_argument': "apply it in a separate diagram and pass its value as an input",
    'eq_function_stage_parity': "declare 'v: axial'",
}


@pytest.mark.parametrize("name, source, code, line, column, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_gets_one_positioned_message(name, source, code, line, column, message):
    with pytest.raises(DiagError) as info:
        checked_program(source, "t.diag")
    err = info.value
    assert err.exit_code == code
    assert (err.position.line, err.position.column) == (line, column)
    assert err.message.startswith(message)
    text = str(err)
    assert text.startswith(f"t.diag:{line}:{column}: ")
    # the offending line is quoted with a caret under the column
    quoted, caret = text.splitlines()[1:3]
    assert quoted.strip() == source.splitlines()[line - 1].strip() or line > len(source.splitlines())
    assert caret.index("^") - 4 == column - 1
    # a help line, last, where the fix is known
    if HELP.get(name):
        assert HELP[name] in err.help
        assert text.splitlines()[3:] == [f"    help: {err.help}"]
    elif name in HELP:
        assert err.help is None and len(text.splitlines()) == 3
    # lark's internal token names never reach the user
    assert not re.search(r"[A-Z_]{3,}", err.message.partition("; expected ")[2]), err.message


#: diagrams with functions, compiled in internal stages (_g_s0, _g_s1; arguments _g_a0_0, results _g_f0)
STAGED = [e for e in ERRORS if "tanh(" in e[1] or "silu(" in e[1]] + [
    ('graph_function_two_nodes', 'diagram g(v: vec[n,c], src: edges[e,n], dst: edges[e,n]) -> w: vec[n,c] {\n'
     '    w[n,c,i] = dst[e,n] src[e,m] tanh(v[m,c,k] v[n,c,k]) v[m,c,i]\n}\n', 2, 2, 34,
     "'tanh(v[m,c,k] v[n,c,k])' has channel axes ['n', 'c', 'n']: two graph axes"),
]


@pytest.mark.parametrize("name, source, code, line, column, message", STAGED, ids=[e[0] for e in STAGED])
def test_messages_from_stages_name_the_users_diagram_and_calls(name, source, code, line, column, message):
    """Every error of a diagram with functions names the user's diagram and writes a function's argument or
    result as the call the user wrote, never an internal stage or tensor name (issue 16)."""
    assert len(STAGED) >= 6
    with pytest.raises(DiagError) as info:
        checked_program(source, "t.diag")
    errors = each_error(info.value)
    assert errors[0].exit_code == code and (errors[0].position.line, errors[0].position.column) == (line, column)
    assert errors[0].message.startswith(message)
    for err in errors:
        assert not re.search(r"_(g|gate)_[safp]\d", str(err)), str(err)


def test_every_terminal_of_the_grammar_has_a_readable_name():
    from compiler.frontend.parser import _lark, describe_terminal

    for term in _lark().terminals:
        shown = describe_terminal(term.name)
        assert shown != term.name and "ANON" not in shown and not re.fullmatch(r"'?[A-Z_]+'?", shown), term.name


def _bad_diagram(k: int) -> str:
    return f"diagram f{k}(a: vec) -> s: scalar {{\n    s = a[i] b[i]\n}}\n"


def test_every_error_of_a_file_is_reported_each_with_its_caret():
    source = ("diagram f(a: vectr) -> s: scalar {\n    s = a[i] a[i]\n}\n"      # 1:14 type
              "diagram g(a: vec) -> (s: scalar, t: scalar) {\n"
              "    s = kron[i,i]\n"                                                # 5:9 name
              "    t = a[i] a[j]\n}\n"                                             # 6: not equivariant (check)
              "diagram h(a: vec) -> s: scalar {\n    s = 2x a[i] a[i]\n}\n"       # 9:9 syntax
              "diagram k(a: vec) -> s: scalar {\n    s = a[i] a[i] / 0\n}\n"     # 12:21 division
              "diagram m(a: vec) -> v: vec {\n    v[i] = a[i] @\n}\n")           # 15:17 syntax
    with pytest.raises(DiagErrors) as info:
        checked_program(source, "t.diag")
    err = info.value
    assert [(e.position.line, e.position.column) for e in err.errors] == [(1, 14), (5, 9), (9, 9), (12, 21), (15, 17)]
    assert err.exit_code == 2 and err.message == err.errors[0].message
    text = str(err)
    for e in err.errors:  # each with its line and caret, in order
        head = f"t.diag:{e.position.line}:{e.position.column}: error: {e.message}"
        at = text.index(head)
        quoted, caret = text[at:].splitlines()[1:3]
        assert quoted.strip() == source.splitlines()[e.position.line - 1].strip()
        assert caret.index("^") - 4 == e.position.column - 1


def test_errors_in_one_diagram_are_all_reported_without_cascades():
    source = ("diagram f(a: vec, b: vec) -> (s: scalar, t: scalar, u: scalar) {\n"
              "    s = a[i] c[i]\n"      # unknown tensor
              "    t = s a[i]\n"         # uses the failed s: no second message
              "    u = a[i] b[i] b[j]\n"  # arity is fine; not equivariant: the checker's job
              "    w = a[i] a[i]\n}\n")  # not an output
    with pytest.raises(DiagErrors) as info:
        checked_program(source, "t.diag")
    assert [(e.position.line, e.message.split(";")[0]) for e in info.value.errors] == [
        (2, "unknown tensor 'c' in diagram 'f'"), (5, "'w' is not a declared output of diagram 'f'")]


def test_at_most_twenty_errors_are_reported():
    source = "".join(_bad_diagram(k) for k in range(25))
    with pytest.raises(DiagErrors) as info:
        checked_program(source, "t.diag")
    assert len(info.value.errors) == MAX_ERRORS == 20 and info.value.truncated
    assert str(info.value).endswith("error: stopped after 20 errors")


def test_every_equation_that_is_not_equivariant_is_reported():
    source = ("diagram f(a: vec, b: vec) -> (c: vec, s: scalar, t: scalar) {\n"
              "    c[i] = eps[i,j,k] a[j] b[k]\n    s = a[i] b[i]\n    t = a[i] b[j]\n}\n")
    (verdict,) = check_source(source, "t.diag")
    assert [e.position.line for e in verdict.errors] == [2, 4] and verdict.error is verdict.errors[0]


def test_every_kind_of_error_is_in_the_table():
    kinds = {name.split("_")[0] for name, *_ in ERRORS}
    assert {"syntax", "type", "name", "eq"} <= kinds
    assert {code for _, _, code, *_ in ERRORS} == {1, 2}
