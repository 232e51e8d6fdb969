"""Train GLCIC (placeholder until the training issue lands: builds the demo networks and exits).

Usage:
  python pipelines/train.py
"""

import sys


def main() -> int:
    import numpy as np

    from glcic_tf import config as cfg, models

    c = cfg.get_preset("demo")
    comp, disc = models.build_models(c.model, c.data.image_size, c.masks.local_size)
    s = c.data.image_size
    out = comp({"image": np.zeros((1, s, s, 3), np.float32),
                "mask": np.zeros((1, s, s, 1), np.float32)})
    print(f"demo smoke path: built completion network ({comp.count_params():,} params) and "
          f"context discriminator ({disc.count_params():,} params); output {tuple(out.shape)}. "
          "Training lands with the training issue.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
