"""Metrics: surprise (here, for the engine and scenario mining); image and video quality later (issue on evaluation)."""

from .surprise import surprise, token_log_probs

__all__ = ["surprise", "token_log_probs"]
