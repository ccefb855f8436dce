"""`sta demo` (``run``): every method's accuracy and cost on the bundled model's held-out proxy clips.

The task is :mod:`sta.data.synthetic` and the model :mod:`sta.models.bundled`; ``proxy`` keeps their 0.2 names.
"""
