"""PLACEHOLDER: being written (replace whole file)."""
def batch_norm(*args, **kwargs):
    raise NotImplementedError("batch_norm")

