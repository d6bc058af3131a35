"""The book's machinery: what the notebooks import to run but do not teach.

``stages`` hands tensors from one chapter to the next (rebuilding a missing one as the earlier
chapter computes it) and holds the book's one prompt; ``smollm2`` is ``make smollm2``, the real
model converted from the GGUF file in its PyPI wheel. The taught library (one module per concept)
never imports this package; the command-line tools (``helpers.tools``) may.
"""
