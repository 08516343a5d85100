"""Metrics, one module per family, each a plain function over uint8 frames (or over features of them):

    reconstruction   MSE, PSNR, SSIM, MS-SSIM, LPIPS: a generated frame against its reference, per frame
    distribution     FID, FVD, CMMD: sets of frames or clips, unpaired; their feature extractors
    networks         the feature networks (Inception, I3D, CLIP, LPIPS), read from users' local files
    surprise         the world model's surprise at a frame, generated or (teacher-forced) real
    ego              ego-command adherence from an ego-motion probe's estimates

`openvica_sim.evaluation` runs the paper's protocol around them (`openvica eval`).
"""

from .surprise import sliding_windows, surprise, teacher_forced_surprise, token_log_probs

__all__ = ["sliding_windows", "surprise", "teacher_forced_surprise", "token_log_probs"]
