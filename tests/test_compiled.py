"""The compiled decode step (issue 18, point 1): static shapes, positions on the device, the cache written by index;
it samples the eager engine's tokens, and after `warm_up` a rollout never recompiles."""

import numpy as np
import pytest
import torch

from openvica_sim.simulator import Simulator


@pytest.fixture(scope="module")
def seed_tokens():
    return np.random.default_rng(0).integers(0, 64, (2, 2, 16, 16))


def test_the_compiled_step_samples_the_eager_engines_tokens_and_never_recompiles_after_warm_up(test_bundle,
                                                                                                seed_tokens):
    eager = Simulator(test_bundle, top_k=20, decoder="tokenizer")
    want, want_surprise = eager.predict(eager.start(tokens=seed_tokens, seeds=[1, 2]), 2)
    compiled = Simulator(test_bundle, top_k=20, decoder="tokenizer", compile=True)
    state = compiled.start(tokens=seed_tokens, seeds=[1, 2])
    compiled.warm_up(state)
    with torch.compiler.set_stance("fail_on_recompile"):  # 2 frames: 510 one-id steps over every block count
        got, got_surprise = compiled.predict(state, 2)
    assert torch.equal(got, want)
    torch.testing.assert_close(got_surprise, want_surprise, rtol=1e-5, atol=1e-6)


def test_the_compiled_cache_is_rounded_up_to_whole_blocks(test_bundle):
    sim = Simulator(test_bundle, decoder="tokenizer", compile=True)
    step = sim._compiled
    assert sim.max_len == step.cache_len and step.cache_len % step.block == 1
    assert step.span(0) == step.block and step.span(step.block) == 2 * step.block
