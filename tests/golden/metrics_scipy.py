"""Golden values for src/metrics/sqrtm.rs and src/metrics/fid.rs (scipy 1.17.1, numpy 2.4.6).

python3 tests/golden/metrics_scipy.py
"""
import numpy as np
from scipy import linalg

np.set_printoptions(precision=17)


def householder(v):
    v = np.asarray(v, dtype=np.float64)
    return np.eye(len(v)) - 2.0 * np.outer(v, v) / (v @ v)


# An SPD matrix of condition number 1e10: Q diag(lam) Q^T, Q a product of two reflections.
q = householder([1, 2, 3, 4, 5]) @ householder([1, -1, 2, -2, 3])
lam = 10.0 ** (-10.0 * np.arange(5) / 4)
a = q @ np.diag(lam) @ q.T
print("cond", np.linalg.cond(a))
s = linalg.sqrtm(a)
print("sqrtm row-major", repr(s.real.ravel()))
print("sqrtm exact - scipy max", np.abs(q @ np.diag(np.sqrt(lam)) @ q.T - s).max())

# FID of two Gaussians whose covariances do not commute, as pytorch-fid's
# calculate_frechet_distance computes it (sqrtm of the product).
mu1 = np.array([0.0, 1.0, 2.0])
mu2 = np.array([0.5, 0.0, 2.0])
s1 = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
s2 = np.array([[1.0, -0.3, 0.1], [-0.3, 2.0, 0.0], [0.1, 0.0, 0.3]])
print("commute?", np.abs(s1 @ s2 - s2 @ s1).max())
covmean = linalg.sqrtm(s1 @ s2).real
diff = mu1 - mu2
print("fid", repr(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))
