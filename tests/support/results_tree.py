"""Walk a pipeline's results.json for its rates, so tests can check every one of them at once."""


def rates_in(tree, path="results"):
    """(path, rate) for every rate dict ({"rate", "low", "high", ...}) anywhere in results.json."""
    if isinstance(tree, dict):
        if {"rate", "low", "high"} <= set(tree):
            yield path, tree
        for key, value in tree.items():
            yield from rates_in(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from rates_in(value, f"{path}[{i}]")


def rate_ok(r) -> bool:
    """A rate with its sample size and an interval around it, all within [0, 1]."""
    return set(r) >= {"rate", "low", "high", "n"} and 0 <= r["low"] <= r["rate"] <= r["high"] <= 1
