"""Export-time code: turns torch models into validated ONNX artifacts.

Needs the ``export`` extra (torch, sentence-transformers, onnx): ``pip install -e '.[export]'``.
Nothing on the serving path imports this package.
"""
