"""How closely does the sampling-free σ (inference.moments) follow MC-dropout's? Per DFD training
capture: Spearman of the two σ maps, σ's scale (mean ratio), and the AUSE (m) of each against the
absolute depth error. The figures in README's benchmark section (2026-12-07) came from this.

Usage: python scripts/moments_vs_mc.py MODEL [SAMPLES] [CAPTURES]
       (e.g. /path/dfd-n2.8-seed0.pt 400 4: four captures spread over the non-calibration ones)
"""
import sys

import numpy as np
import torch

from inference.cv import ause, spearman
from inference.export import load_net
from inference.mc_dropout import mc_predict
from inference.moments import moments_predict
from inference.predict import to_tensor
from inference.quantize import CALIBRATION_IMAGES, dfd_images

torch.set_num_threads(1)
model = sys.argv[1] if len(sys.argv) > 1 else "dfd-n2.8"
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 400
count = int(sys.argv[3]) if len(sys.argv) > 3 else 4
net, meta, _ = load_net(model)
rest = dfd_images((645, 432), kind=str(meta.get("input", "N2_8")))[CALIBRATION_IMAGES:]
if not rest:
    sys.exit("no DFD captures found under the shared data folder")
for cid, rgb, gt in rest[::max(1, len(rest) // count)][:count]:
    x = to_tensor(rgb)
    m_mean, m_var = moments_predict(net, x)
    c_mean, c_var = mc_predict(net, x, samples=samples, seed=0)
    s_m, s_c = m_var.clamp_min(0).sqrt()[0, 0].numpy(), c_var.clamp_min(0).sqrt()[0, 0].numpy()
    ok = gt > 0
    a_m = ause(np.abs(m_mean[0, 0].numpy() - gt)[ok], s_m[ok])["ause"]
    a_c = ause(np.abs(c_mean[0, 0].numpy() - gt)[ok], s_c[ok])["ause"]
    print(f"{cid}: Spearman {spearman(s_m, s_c):.3f}, σ scale {s_m.mean() / s_c.mean():.2f}, "
          f"AUSE moments {a_m:.4f} m, MC-{samples} {a_c:.4f} m", flush=True)
