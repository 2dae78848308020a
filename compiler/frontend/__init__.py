"""The front end: .diag text -> syntax tree (grammar.lark, parser, ast) -> IR (lower, functions, graph)."""
