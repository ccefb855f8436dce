"""Write ``sta/data/assets/digits.npz``: the 1,797 handwritten digits the hard proxy task draws its objects from.

They are scikit-learn's bundled copy of the UCI "Optical Recognition of Handwritten
Digits" test set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0): 8 x 8 images with
values 0..16. The package ships them as uint8 so that generating clips needs no
scikit-learn. Run once, with scikit-learn installed (it is not a dependency):

    pip install scikit-learn && python benchmarks/make_digits_asset.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "sta" / "data" / "assets" / "digits.npz"

if __name__ == "__main__":
    digits = load_digits()
    images = digits.images.astype(np.uint8)  # values 0..16, exact
    assert (images == digits.images).all()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, images=images, labels=digits.target.astype(np.uint8))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {images.shape[0]} digits, counts {np.bincount(digits.target)}")
