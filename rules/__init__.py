"""The edgeside rule language: parser -> AST -> checker -> compiler -> engine."""
