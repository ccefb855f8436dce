"""Optional dependencies fail with the pip command that installs them."""

import sys

import pytest
import torch

from sta.utils.optional import HF_INSTALL_HINT, require_matplotlib, require_pillow, require_transformers


def test_missing_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match="sta-prune\\[hf\\]") as err:
        require_transformers()
    assert str(err.value) == HF_INSTALL_HINT
    from sta.adapters.hf import patch_hf

    with pytest.raises(ImportError, match="pip install"):
        patch_hf(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("module, require", [("PIL", require_pillow), ("matplotlib", require_matplotlib)])
def test_missing_plot_extra_says_how_to_install(monkeypatch, module, require):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r'pip install "sta-prune\[plot\]"'):
        require()
