"""Metrics: surprise (here, for the engine and scenario mining); image and video quality later (issue on evaluation)."""

from .surprise import sliding_windows, surprise, teacher_forced_surprise, token_log_probs

__all__ = ["sliding_windows", "surprise", "teacher_forced_surprise", "token_log_probs"]
