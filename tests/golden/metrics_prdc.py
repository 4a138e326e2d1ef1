"""Golden values for src/metrics/prdc.rs: the reference implementation of Naeem et al. 2020
(pip install prdc==0.2, clovaai/generative-evaluation-prdc), on two small point clouds.

python3 tests/golden/metrics_prdc.py
"""
import numpy as np
from prdc import compute_prdc

i = np.arange(40, dtype=np.float64)
# A sunflower spiral of 40 points (the real set), and 30 points of a wider spiral moved
# off centre (the fake set), 3-d with a small third coordinate.
real = np.stack([np.sqrt(i) * np.cos(2.39996 * i), np.sqrt(i) * np.sin(2.39996 * i), 0.1 * np.cos(i)], 1)
j = np.arange(30, dtype=np.float64)
fake = np.stack([1.5 * np.sqrt(j) * np.cos(2.39996 * j + 1) + 5.0, 1.5 * np.sqrt(j) * np.sin(2.39996 * j + 1), 0.1 * np.sin(j)], 1)
print(compute_prdc(real_features=real.astype(np.float32), fake_features=fake.astype(np.float32), nearest_k=5))
