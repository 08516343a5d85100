"""What only a GPU can show (issue 18): run with `pytest -m gpu` on a CUDA machine; skipped elsewhere.

- batch invariance: a clip decoded alone equals the same clip as a row of batch 8 and of batch 32, in bf16 (the
  engine's fixed minimum width must be one where cuBLAS rounds alike: `benchmarks/batch_invariance.py` finds it);
- the compiled step (CUDA graphs, mode reduce-overhead) samples the eager engine's tokens and never recompiles.
"""

import numpy as np
import pytest
import torch

from openvica_sim.bundle import create_random_bundle
from openvica_sim.simulator import Simulator

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def cuda_bundle():
    return create_random_bundle("tiny", seed=0, video_decoder=False, device="cuda", dtype=torch.bfloat16)


def clips(count: int, K: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, K, (count, 2, 16, 16))


@pytest.mark.parametrize("width", [8, 32])
def test_a_clip_alone_equals_the_same_clip_as_a_row_of_a_batch_in_bf16(cuda_bundle, width):
    K = cuda_bundle.world_model.config.codebook_size
    seeds = clips(width, K)
    sim = Simulator(cuda_bundle, top_k=100, decoder="tokenizer")
    alone, _ = sim.predict(sim.start(tokens=seeds[3:4], seeds=[3]), 1)
    batched, _ = sim.predict(sim.start(tokens=seeds, seeds=list(range(width))), 1)
    assert torch.equal(alone[0], batched[3])


def test_the_compiled_cuda_graph_step_samples_the_eager_tokens_without_recompiling(cuda_bundle):
    K = cuda_bundle.world_model.config.codebook_size
    seeds = clips(4, K)
    eager = Simulator(cuda_bundle, top_k=100, decoder="tokenizer")
    want, _ = eager.predict(eager.start(tokens=seeds, seeds=[0, 1, 2, 3]), 2)
    compiled = Simulator(cuda_bundle, top_k=100, decoder="tokenizer", compile=True)
    state = compiled.start(tokens=seeds, seeds=[0, 1, 2, 3])
    compiled.warm_up(state)
    with torch.compiler.set_stance("fail_on_recompile"):
        got, _ = compiled.predict(state, 2)
    assert torch.equal(got, want)
