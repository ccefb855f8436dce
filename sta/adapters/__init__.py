"""Thin adapters that give STA to models from other libraries (one file per model family).

- :mod:`sta.adapters.hf`: :func:`sta.patch_hf` for transformers VideoMAE, ViViT and V-JEPA 2
  (bare models and video classifiers), and ``forward_with_trace``;
- :mod:`sta.adapters.family`: :class:`~sta.adapters.family.Family`, what differs between families;
- :mod:`sta.adapters.loop`: the pruning loop and patching machinery the families share;
- :mod:`sta.adapters.videomae`, :mod:`sta.adapters.vivit`, :mod:`sta.adapters.vjepa2`: one family each;
- :mod:`sta.adapters.wrapper`: :class:`HFVideoClassifier`, a patched classifier as a
  :class:`sta.core.contract.ClipClassifier`;
- :mod:`sta.adapters.directory`: :func:`load_hf_directory` / :func:`hf_architecture` for a local Hugging Face
  directory (loaded through :func:`sta.models.convert.load_hf_classifier`).
"""

_LAZY = {
    "load_hf_directory": "sta.adapters.directory",
    "hf_architecture": "sta.adapters.directory",
    "HFVideoClassifier": "sta.adapters.wrapper",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sta.adapters' has no attribute {name!r}")
