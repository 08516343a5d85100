"""The batched engine (issue 2, point 7): one frame per step, reproducible, bounded memory."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from openvica_sim.frames import postprocess
from openvica_sim.metrics import surprise, token_log_probs
from openvica_sim.simulator import Simulator, codec_threads


@pytest.fixture(scope="module")
def sim(test_bundle):
    return Simulator(test_bundle, top_k=20)


@pytest.fixture(scope="module")
def three_clip_rollout(sim, seed_frames):
    return sim.rollout(seed_frames, 3, seeds=[11, 22, 33])


def _teacher_forced_log_probs(sim, state):
    """log p of every code in context, from ONE uncached forward over prompt + frames: the reference."""
    wm, n = sim.wm, sim.n
    seq = torch.cat([sim.prompt_ids[None].expand(state.history.shape[0], -1),
                     state.history.reshape(state.history.shape[0], -1)], 1)
    logits = wm.code_logits(wm.hidden_states(seq))  # (W, L, K)
    P, frame_len = len(sim.prompt_ids), state.history.shape[2]
    logps = []
    for f in range(state.history.shape[1]):
        first = P + f * frame_len + (frame_len - n - 1)  # position of the frame's first code
        codes = seq[:, first:first + n] - wm.config.text_vocab_size
        logps.append(token_log_probs(logits[:, first - 1:first - 1 + n], codes))
    return torch.stack(logps, 1)  # (W, F, n)


def test_rollout_returns_uint8_frames_tokens_and_surprise(three_clip_rollout):
    r = three_clip_rollout
    assert r.frames.shape == (3, 3, 256, 256, 3) and r.frames.dtype == np.uint8
    assert r.tokens.shape == (3, 3, 16, 16) and r.seed_tokens.shape == (3, 2, 16, 16)
    assert r.surprise.shape == (3, 3) and np.all(r.surprise > 0)


def test_same_seed_gives_same_rollout(sim, seed_frames, three_clip_rollout):
    again = sim.rollout(seed_frames, 3, seeds=[11, 22, 33])
    assert np.array_equal(again.tokens, three_clip_rollout.tokens)
    assert np.array_equal(again.frames, three_clip_rollout.frames)


def test_different_seeds_give_different_rollouts(sim, seed_frames, three_clip_rollout):
    other = sim.rollout(seed_frames, 3, seeds=[12, 22, 33])
    assert not np.array_equal(other.tokens[0], three_clip_rollout.tokens[0])
    assert np.array_equal(other.tokens[1:], three_clip_rollout.tokens[1:]), "other rows must not care"


def test_tokens_do_not_depend_on_the_batch_a_clip_ran_in(sim, seed_frames, three_clip_rollout):
    alone = sim.rollout(seed_frames[1:2], 3, seeds=[22])
    assert np.array_equal(alone.tokens[0], three_clip_rollout.tokens[1])
    seven = sim.rollout(np.concatenate([seed_frames, seed_frames, seed_frames[:1]]), 3,
                        seeds=[11, 22, 33, 44, 55, 66, 77])  # wider than the engine's minimum row width
    assert sim.min_rows < 7
    assert np.array_equal(seven.tokens[:3], three_clip_rollout.tokens)


def test_cached_decoding_matches_one_uncached_forward(sim, seed_frames):
    state = sim.start(seed_frames[:1], seeds=[5])
    outs = [sim.step(state) for _ in range(2)]
    reference = _teacher_forced_log_probs(sim, state)  # includes the frame generated ahead
    T = 2
    for k, out in enumerate(outs):
        np.testing.assert_allclose(out.surprise[0], surprise(reference[0, T + k]).item(), rtol=1e-4)


def test_end_of_frame_closes_every_frame_and_codes_fill_the_rest(sim, seed_frames):
    state = sim.start(seed_frames[:1], seeds=[5])
    sim.step(state)
    cfg, n = sim.wm.config, sim.n
    assert state.history.shape[2] == n + 1 == 257
    assert torch.all(state.history[:, :, -1] == cfg.end_of_frame_id)
    codes = state.history[:, :, :-1] - cfg.text_vocab_size
    assert codes.min() >= 0 and codes.max() < cfg.codebook_size


def test_video_decoder_keeps_one_frame_of_tokens_ahead(sim, test_bundle, seed_frames):
    state = sim.start(seed_frames[:1], seeds=[5])
    first = sim.step(state)
    assert len(state.ahead) == 1, "frame t+1 must exist before frame t is shown"
    assert state.history.shape[1] == 2 + 2, "two seed frames, the frame shown and the one ahead"
    previous, shown, ahead = sim.layout.codes(state.history)[:1, 1:].unbind(1)
    assert np.array_equal(shown.numpy(), first.tokens)
    with codec_threads(torch.device("cpu")):  # a frame is defined at the codecs' thread count
        expected = postprocess(test_bundle.video_decoder.decode_window(torch.stack([previous, shown, ahead], 1)))
    assert np.array_equal(first.frames, expected)


def test_image_decoder_option_shows_dec_of_the_frames_own_tokens(test_bundle, seed_frames):
    sim = Simulator(test_bundle, top_k=20, decoder="tokenizer")
    state = sim.start(seed_frames[:1], seeds=[5])
    out = sim.step(state)
    assert state.ahead == []

    with codec_threads(torch.device("cpu")):
        expected = postprocess(test_bundle.tokenizer.decode(torch.as_tensor(out.tokens)))
    assert np.array_equal(out.frames, expected)


def test_context_window_slides_and_memory_stays_bounded(test_bundle, seed_frames):
    sim = Simulator(test_bundle, top_k=20, decoder="tokenizer", context_frames=4)
    state = sim.start(seed_frames[:1], seeds=[5])
    cache_bytes = state.cache.keys.numel()
    outs = [sim.step(state) for _ in range(5)]  # 2 seed + 5 frames through a 4-frame window
    assert state.history.shape[1] <= 4
    assert state.cache.keys.numel() == cache_bytes
    assert state.cache.length == len(sim.prompt_ids) + state.history.shape[1] * 257 - 2, "contiguous positions"
    # after the slide the cache must equal a fresh prefill of the kept frames at contiguous positions
    reference = _teacher_forced_log_probs(sim, state)
    np.testing.assert_allclose(outs[-1].surprise[0], surprise(reference[0, -1]).item(), rtol=1e-4)
    assert [o.frame_index for o in outs] == [2, 3, 4, 5, 6]


def test_branches_share_the_prefill_and_continue_like_the_original(sim, seed_frames):
    state = sim.start(seed_frames[:2], seeds=[7, 8])
    copy = state.clone()
    branches = sim.branch(state, rows=[0, 0, 1], seeds=[7, 99, 8])
    original = [sim.step(state).tokens for _ in range(2)]
    cloned = [sim.step(copy).tokens for _ in range(2)]
    branched = [sim.step(branches).tokens for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(original, cloned))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[2]) for a, b in zip(original, branched))
    assert not np.array_equal(branched[0][0], branched[0][1]), "a new seed gives a new future"


def test_top_k_one_is_greedy_and_ignores_the_seed(test_bundle, seed_frames):
    sim = Simulator(test_bundle, top_k=1, decoder="tokenizer")
    a = sim.rollout(seed_frames[:1], 1, seeds=[1]).tokens
    b = sim.rollout(seed_frames[:1], 1, seeds=[2]).tokens
    assert np.array_equal(a, b)


def test_action_conditioned_frames_carry_ego_ids_before_their_codes(action_bundle, seed_frames):
    sim = Simulator(action_bundle, top_k=20, decoder="tokenizer")
    state = sim.start(seed_frames[:1], seeds=[5])
    sim.step(state, actions=np.array([[1.0, 0.0]]))  # 40 m/s, straight
    cfg, coding = sim.wm.config, action_bundle.action_coding
    assert state.history.shape[2] == 259
    assert state.history[0, 0, :2].tolist() == [cfg.vision_id(coding.speed_unknown), cfg.vision_id(coding.yaw_unknown)]
    speed_id, yaw_id = coding.vision_ids(40.0, 0.0)
    assert state.history[0, -1, :2].tolist() == [cfg.vision_id(int(speed_id)), cfg.vision_id(int(yaw_id))]
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        sim.step(state, actions=np.array([[3.0, 0.0]]))


def test_commands_give_each_predicted_frame_its_own_ego_ids_and_the_codes_of_predict(action_bundle, seed_frames):
    sim = Simulator(action_bundle, top_k=20, decoder="tokenizer")
    coding = action_bundle.action_coding
    commands = np.stack([coding.to_normalized([20.0, 10.0, 0.0], np.zeros(3)),  # brake to standstill
                         coding.to_normalized(np.full(3, 20.0), np.full(3, 0.2))])  # (2 clips, 3 frames, 2)
    out = sim.rollout(seed_frames[:2], 3, seeds=[1, 2], commands=commands)
    assert out.frames.shape[:2] == (2, 3) and out.tokens.shape[:2] == (2, 3) and out.surprise.shape == (2, 3)
    state = sim.start(seed_frames[:2], seeds=[1, 2])
    codes, _ = sim.predict(state, 4, np.concatenate([commands, commands[:, -1:]], 1))
    assert np.array_equal(out.tokens, codes[:, :3].numpy()), "replaying commands is predict with the same draws"
    speed_ids = coding.vision_ids(np.array([20.0, 10.0, 0.0]), np.zeros(3))[:, 0]
    assert state.history[0, -4:-1, 0].tolist() == [sim.wm.config.vision_id(int(i)) for i in speed_ids]
    with pytest.raises(ValueError, match=r"commands must be \(B, num_frames, 2\)"):
        sim.rollout(seed_frames[:2], 2, seeds=[1, 2], commands=commands)
    with pytest.raises(ValueError, match="not both"):
        sim.rollout(seed_frames[:2], 3, seeds=[1, 2], commands=commands, actions=commands)


@pytest.mark.parametrize("frames, match", [
    (np.zeros((1, 1, 64, 64, 3), np.uint8), "at least 2"),
    (np.zeros((1, 2, 64, 64, 3), np.float32), "uint8"),
    (np.zeros((2, 64, 64, 3), np.uint8), r"\(B, T, H, W, 3\)"),
    (np.zeros((1, 2, 64, 64, 4), np.uint8), "RGBA"),
])
def test_bad_seed_frames_are_clear_errors(sim, frames, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sim.start(frames, seeds=[0])


def test_wrong_seed_count_and_bad_options_are_clear_errors(sim, test_bundle, seed_frames):
    with pytest.raises(ValueError, match="one sampler seed per clip"):
        sim.start(seed_frames, seeds=[1])
    with pytest.raises(ValueError, match="top_k=0"):
        Simulator(test_bundle, top_k=0)
    with pytest.raises(ValueError, match="decoder='vdec'"):
        Simulator(test_bundle, decoder="vdec")


def test_simulator_core_imports_no_edge_libraries():
    # `import openvica_sim` registers OpenViCA-v0 and so loads gymnasium (docs/design.md "Gymnasium 1.4"); only the
    # package __init__ and envs/ may. So: at run time no ray, hydra or zarr gets loaded, and in the source no
    # module the engine imports, transitively, imports an edge library.
    code = ("import sys, openvica_sim.simulator; "
            "print(sorted(m for m in ('ray', 'hydra', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert _edge_imports("openvica_sim.simulator") == {}


EDGE_LIBRARIES = {"gymnasium", "ray", "hydra", "zarr"}


def _edge_imports(root: str) -> dict[str, set[str]]:
    """{module: its edge imports} over `root` and every openvica_sim module it imports, transitively, read from
    the source. The package __init__ (it registers the env) is not followed; importing openvica_sim.envs counts as an edge."""
    import ast
    import importlib.util
    from pathlib import Path

    def is_module(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            return False

    found, seen, todo = {}, set(), [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        package = name if spec.submodule_search_locations else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                subs = [f"{base}.{a.name}" for a in node.names] if base.startswith("openvica_sim") else []
                modules = [base, *filter(is_module, subs)]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in EDGE_LIBRARIES or module.startswith("openvica_sim.envs"):
                    found.setdefault(name, set()).add(module)
                elif module.startswith("openvica_sim."):  # the module and its parent packages, not the root
                    parts = module.split(".")
                    todo += [".".join(parts[:k]) for k in range(2, len(parts) + 1)]
    return found
