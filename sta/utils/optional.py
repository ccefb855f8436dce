"""Optional dependencies: import them where needed, or fail with the pip command that installs them.

The core needs only torch, numpy and PyAV; each extra of ``pyproject.toml``
unlocks one feature.
"""

from __future__ import annotations

from types import ModuleType

from sta.errors import MissingDependency

HF_INSTALL_HINT = 'transformers is needed for Hugging Face models: pip install "sta-prune[hf]"'


def require_transformers() -> ModuleType:
    """The ``transformers`` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as err:
        raise MissingDependency(HF_INSTALL_HINT) from err
    return transformers


def require_pillow():
    """``(PIL.Image, PIL.ImageDraw)``, or an ImportError naming the ``plot`` extra."""
    try:
        from PIL import Image, ImageDraw
    except ImportError as err:
        raise MissingDependency('images need Pillow: pip install "sta-prune[plot]"') from err
    return Image, ImageDraw


def require_matplotlib():
    """``matplotlib.pyplot`` on the file-only Agg backend, or an ImportError naming the ``plot`` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingDependency('plots need matplotlib: pip install "sta-prune[plot]"') from err
    return plt


def require_backend(module: str, extra: str) -> ModuleType:
    """A deployment backend's module (``onnx``, ``onnxruntime``, ``openvino``), or how to install it."""
    try:
        return __import__(module)
    except ImportError as err:
        raise MissingDependency(f'this needs {module}: pip install "sta-prune[{extra}]"') from err
