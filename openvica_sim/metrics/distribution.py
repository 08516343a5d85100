"""Distribution metrics: how alike two sets of frames or videos are, without pairing them (paper IV-A "Metrics").

Generated frames may rightly diverge from the real continuation; these measure whether they look like real ones.

    FID   (ref. [45])  Frechet distance of Inception-v3 pool features (2048) of single frames
    FVD   (ref. [47])  Frechet distance of I3D features (400) of whole clips (B, T frames)
    CMMD  (ref. [46])  maximum mean discrepancy of unit CLIP image embeddings, RBF kernel sigma = 10, x 1000

Conventions (StyleGAN-V's `metric_utils`, Google's CMMD): features are float32 from the network, statistics are
float64, the covariance is the biased one (divided by the count, not count - 1), and the Frechet distance takes the
trace of the matrix square root from eigenvalues (below), which stays real and finite when the covariances are
singular, as they are with fewer samples than feature dimensions. CMMD uses every sample (no batch remainder is
dropped) and the biased (V-statistic) MMD, diagonal included.

Frames are uint8, channels last: (N, H, W, 3) for FID and CMMD, videos (B, T, H, W, 3) for FVD. The feature
functions return float32 numpy arrays; `fid`, `fvd` and `cmmd` take two feature arrays and return a float.
"""

from __future__ import annotations

import numpy as np
import torch

from openvica_sim.frames import check_rgb_uint8

CMMD_SIGMA = 10.0  # Google's CMMD: the RBF bandwidth on unit CLIP embeddings
CMMD_SCALE = 1000.0  # and the factor its paper reports values in


# ---- features ----------------------------------------------------------------------------------------------------

@torch.inference_mode()
def inception_features(frames: np.ndarray, network, batch_size: int = 64) -> np.ndarray:
    """(N, 2048) float32 Inception-v3 features of frames uint8 (N, H, W, 3): `network(x, return_features=True)`
    on uint8 (n, 3, H, W), as StyleGAN2-ADA feeds it."""
    return _features(frames, 4, lambda x: network(x, return_features=True), network, batch_size)


@torch.inference_mode()
def i3d_features(videos: np.ndarray, network, batch_size: int = 8) -> np.ndarray:
    """(B, 400) float32 I3D features of videos uint8 (B, T, H, W, 3): `network(x, rescale=True, resize=True,
    return_features=True)` on uint8 (b, 3, T, H, W) in 0..255, as StyleGAN-V feeds it."""
    return _features(videos, 5, lambda x: network(x, rescale=True, resize=True, return_features=True), network,
                     batch_size)


@torch.inference_mode()
def clip_embeddings(frames: np.ndarray, embedder, batch_size: int = 32) -> np.ndarray:
    """(N, D) float32 unit CLIP image embeddings of frames uint8 (N, H, W, 3) (`networks.ClipImageEmbedder`)."""
    return _features(frames, 4, embedder, embedder, batch_size)


def _features(x: np.ndarray, ndim: int, call, network, batch_size: int) -> np.ndarray:
    """`call` on chunks of x channels first: (n, 3, H, W) of frames (ndim 4) or (n, 3, T, H, W) of videos (ndim 5)."""
    x = check_rgb_uint8(x, ndims=(ndim,))
    device = _device_of(network)
    out = []
    for i in range(0, len(x), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)
        out.append(call(batch.movedim(-1, 1).contiguous()).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _device_of(network) -> torch.device:
    for tensors in (network.parameters(), network.buffers()):
        for t in tensors:
            return t.device
    return torch.device("cpu")


# ---- statistics and distances ------------------------------------------------------------------------------------

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), biased covariance (D, D)) in float64 of features (N, D)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"features must be (N >= 1, D), got shape {x.shape}")
    mean = x.mean(axis=0)
    centred = x - mean
    return mean, centred.T @ centred / len(x)


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)) in float64.

    tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric positive semi-definite
    matrix with the same eigenvalues as S_a S_b: real and finite where scipy's `sqrtm(S_a @ S_b)` can turn complex or
    NaN for singular covariances. Round-off can leave a result of -1e-12 for equal inputs; it is clipped at 0.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (len(mean_a),) * 2:
        raise ValueError(f"statistics do not match: means {mean_a.shape} and {mean_b.shape}, covariances "
                         f"{cov_a.shape} and {cov_b.shape}")
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mean_a - mean_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt, 0.0))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def fid(generated_features: np.ndarray, real_features: np.ndarray) -> float:
    """FID of Inception features (N, 2048) of generated and real frames (`inception_features`)."""
    return frechet_distance(*feature_statistics(generated_features), *feature_statistics(real_features))


def fvd(generated_features: np.ndarray, real_features: np.ndarray) -> float:
    """FVD of I3D features (B, 400) of generated and real clips (`i3d_features`)."""
    return frechet_distance(*feature_statistics(generated_features), *feature_statistics(real_features))


def cmmd(generated_embeddings: np.ndarray, real_embeddings: np.ndarray, sigma: float = CMMD_SIGMA,
         scale: float = CMMD_SCALE) -> float:
    """CMMD: scale * MMD^2 with the RBF kernel exp(-||x - y||^2 / (2 sigma^2)) of CLIP embeddings (N, D), (M, D),
    the biased estimate over all pairs (diagonals included), in float64."""
    x, y = np.asarray(generated_embeddings, np.float64), np.asarray(real_embeddings, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"embeddings must be (N, D) and (M, D) with N, M >= 1, got {x.shape} and {y.shape}")
    gamma = 1.0 / (2 * sigma ** 2)

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return float(np.exp(-gamma * np.clip(squared, 0, None)).mean())

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))
