"""PLACEHOLDER: being written (replace whole file)."""
def linear(*args, **kwargs):
    raise NotImplementedError("linear")

