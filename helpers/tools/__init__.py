"""Tooling around the book, not a concept it teaches.

- ``cli``: ``python -m helpers generate|logits|export-hf``
- ``book``: ``make run`` and ``make notebooks``
- ``bench``: ``make bench``
- ``weights``: ``make weights`` (download Meta's files)
- ``tiny_model``: ``make tiny-model`` (train the embedded checkpoint, write its card)
"""
