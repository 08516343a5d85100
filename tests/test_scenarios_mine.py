"""`openvica scenarios mine`: real clips ranked by the world model's teacher-forced surprise (docs/design.md "Scenarios").

The reference for surprise is the engine itself: a store made of the engine's own rollouts must be scored exactly as
the engine scored those frames while generating them, context slides and ego ids included. With the tiny random
"test" WM, the engine's top-4 continuations are far more probable (about 3.87 nats per code) than random codes
(about log 64 + 0.01 = 4.17), so a clip whose last frame is random codes is the rare moment to find.
"""

import argparse
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from openvica_sim.data.store import PartWriter, consolidate
from openvica_sim.metrics import sliding_windows
from openvica_sim.scenarios import mine as mining
from openvica_sim.simulator import Simulator
from openvica_sim.video_io import read_image

GRID, K = 16, 64  # the test tokenizer's grid and codebook
ENGINE_TOL = 1e-5  # nats: cached decoding vs one uncached forward, fp32 (measured: up to 5e-7)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here: the test WM is so small that a decode step is mostly thread synchronisation, and on the
    shared 2-core machine two threads made each rollout below about 50 times slower (110 s against 2 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_store(root, clips, token_shape=(GRID, GRID), codebook_size=K):
    """A token store as ingest writes it: clips = [{"clip_id", "tokens", optional "speed_mps", "yaw_rate_rps"}]."""
    writer = PartWriter(root, 0, fps=4.0, split="val", token_shape=token_shape, codebook_size=codebook_size)
    for c in clips:
        F = len(c["tokens"])
        unknown = np.full(F, np.nan, np.float32)
        writer.append_clip({"clip_id": c["clip_id"], "video_id": c["clip_id"], "split": "val", "fps": 4.0,
                            "ego_status": "ok", "attributes": c.get("attributes", {})},
                           {"tokens": c["tokens"], "speed_mps": c.get("speed_mps", unknown),
                            "yaw_rate_rps": c.get("yaw_rate_rps", unknown),
                            "frame_time_s": np.arange(F, dtype=np.float32) / 4})
    writer.set_complete(True)
    consolidate(root)
    return root


def random_codes(shape, seed):
    return np.random.default_rng(seed).integers(0, K, shape)


@pytest.fixture(scope="module")
def sliding_rollout(test_bundle):
    """The engine with a 4-frame context (it slides after 2 generated frames): 3 clips of 2 random seed frames
    continued by 4 frames with top-k 4. Returns (simulator, codes (3, 6, h, w), engine surprise (3, 4))."""
    sim = Simulator(test_bundle, top_k=4, decoder="tokenizer", context_frames=4)
    seeds = random_codes((3, 2, GRID, GRID), seed=0)
    out = sim.rollout(None, 4, seeds=[0, 1, 2], tokens=seeds)
    return sim, np.concatenate([seeds, out.tokens], axis=1), out.surprise


@pytest.fixture(scope="module")
def rare_store(tmp_path_factory, sliding_rollout):
    """Three clips the WM would have driven itself (the first 4 frames of the rollouts: generated before any slide)
    and "rare": clip a's frames with its last frame replaced by random codes."""
    _, codes, _ = sliding_rollout
    clips = [{"clip_id": name, "tokens": codes[i, :4].astype(np.uint16),
              "attributes": {"weather": "clear", "timeofday": "daytime", "scene": "highway"}}
             for i, name in enumerate("abc")]
    rare = codes[0, :4].copy()
    rare[3] = random_codes((GRID, GRID), seed=1)
    clips.append({"clip_id": "rare", "tokens": rare.astype(np.uint16), "attributes": {"weather": "snowy"}})
    return write_store(tmp_path_factory.mktemp("rare") / "store.zarr", clips)


@pytest.fixture(scope="module")
def mined(tmp_path_factory, rare_store, test_bundle):
    out = tmp_path_factory.mktemp("mined") / "surprise.parquet"
    return mining.mine(rare_store, test_bundle, out, top=1, progress=False), out


# ---- the window plan ---------------------------------------------------------------------------------------------

def test_windows_score_every_frame_after_the_first_two_exactly_once_with_two_or_more_frames_of_context():
    for stride in range(1, 15):
        for num_frames in range(0, 50):
            windows = sliding_windows(num_frames, window=16, stride=stride, context=2)
            scored = [f for start, stop, first in windows for f in range(first, stop)]
            assert scored == list(range(2, num_frames)), (num_frames, stride, windows)
            for start, stop, first in windows:
                assert 0 <= start < first < stop <= num_frames and stop - start <= 16 and first - start >= 2


def test_windows_start_every_stride_frames_and_the_last_ends_with_the_clip():
    assert sliding_windows(40, 16, 8, 2) == [(0, 16, 2), (8, 24, 16), (16, 32, 24), (24, 40, 32)]
    assert sliding_windows(27, 16, 8, 2) == [(0, 16, 2), (8, 24, 16), (11, 27, 24)]  # full length, more context
    assert sliding_windows(9, 16, 8, 2) == [(0, 9, 2)]
    assert sliding_windows(2, 16, 8, 2) == []


def test_a_stride_that_would_leave_frames_without_two_frames_of_context_is_refused():
    with pytest.raises(ValueError, match=r"stride=15 must be in \[1, 14\]"):
        sliding_windows(40, 16, 15, 2)


# ---- Simulator.score: the library's teacher-forced surprise -------------------------------------------------------

def test_teacher_forced_scores_equal_the_engines_own_surprise_across_a_context_slide(sliding_rollout):
    sim, codes, engine_surprise = sliding_rollout
    scores = np.stack(sim.score(codes, stride=2))  # windows [0, 4) and [2, 6): the engine's context at every frame
    assert np.isnan(scores[:, :2]).all()
    np.testing.assert_allclose(scores[:, 2:], engine_surprise, atol=ENGINE_TOL, rtol=0)


def test_the_last_window_ends_with_the_clip_and_scores_its_new_frames_in_that_windows_context(sliding_rollout):
    sim, codes, _ = sliding_rollout
    clip = np.concatenate([codes[0], random_codes((1, GRID, GRID), seed=4)])  # 7 frames: windows [0,4) [2,6) [3,7)
    scores = sim.score([clip], stride=2)[0]
    np.testing.assert_allclose(scores[:6], sim.score([clip[:6]], stride=2)[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(scores[6], sim.score([clip[3:]], stride=2)[0][3], atol=1e-6, rtol=0)


def test_action_conditioned_scores_put_each_frames_ego_ids_from_speed_and_yaw_rate_before_it(action_bundle):
    sim = Simulator(action_bundle, top_k=4, decoder="tokenizer")
    seeds = random_codes((2, 2, GRID, GRID), seed=2)
    actions = np.random.default_rng(3).uniform(-1, 1, (2, 3, 2))
    out = sim.rollout(None, 3, seeds=[5, 6], tokens=seeds, actions=actions)
    speed, yaw = action_bundle.action_coding.from_normalized(actions)
    unknown = np.full((2, 2), np.nan)  # rollout() seeds with "unknown" ego ids
    codes = np.concatenate([seeds, out.tokens], axis=1)
    speed, yaw = np.concatenate([unknown, speed], 1), np.concatenate([unknown, yaw], 1)
    np.testing.assert_allclose(np.stack(sim.score(codes, speed, yaw))[:, 2:], out.surprise, atol=ENGINE_TOL, rtol=0)
    without_ego = np.stack(sim.score(codes))[:, 2:]
    assert np.abs(without_ego - out.surprise).max() > 1e-3, "the ego ids must change the prediction"


def test_scores_do_not_depend_on_the_batch_size_or_on_the_other_clips(sliding_rollout):
    sim, codes, _ = sliding_rollout
    together = sim.score(codes, stride=2, batch_size=8)
    alone = sim.score(codes[1:2], stride=2, batch_size=1)
    np.testing.assert_allclose(alone[0], together[1], atol=1e-6, rtol=0)


def test_score_refuses_codes_outside_the_codebook_and_names_the_clip(sliding_rollout):
    sim, codes, _ = sliding_rollout
    bad = codes.copy()
    bad[1, 3, 0, 0] = K
    with pytest.raises(ValueError, match=r"clip 1: codes must be in \[0, 64\)"):
        sim.score(bad)


# ---- mine: the ranked table and the contact sheet ----------------------------------------------------------------

def test_a_clip_whose_last_frame_is_random_codes_ranks_first(mined):
    table, _ = mined
    first = table.slice(0, 1).to_pylist()[0]
    assert first["clip_id"] == "rare" and first["rank"] == 0 and first["peak_frame"] == 3
    assert first["surprise_max"] > max(table.column("surprise_max").to_pylist()[1:]) + 0.1


def test_ranking_by_mean_also_puts_the_rare_clip_first(rare_store, test_bundle, tmp_path):
    table = mining.mine(rare_store, test_bundle, tmp_path / "by-mean.parquet", by="mean", top=0, progress=False)
    assert table.column("clip_id").to_pylist()[0] == "rare"
    means = table.column("surprise_mean").to_pylist()
    assert means == sorted(means, reverse=True)


def test_mining_the_engines_own_rollouts_reproduces_the_surprise_it_reported(mined, sliding_rollout):
    table, _ = mined
    _, _, engine_surprise = sliding_rollout
    by_id = {r["clip_id"]: r["surprise"] for r in table.to_pylist()}
    for i, name in enumerate("abc"):
        np.testing.assert_allclose(by_id[name][2:], engine_surprise[i, :2], atol=ENGINE_TOL, rtol=0)


def test_the_parquet_reads_back_with_the_documented_columns_one_row_per_clip_sorted_by_rank(mined):
    _, out = mined
    table = pq.read_table(out)
    assert table.column_names == list(mining.COLUMNS)
    rows = table.to_pylist()
    assert [r["rank"] for r in rows] == [0, 1, 2, 3] and sorted(r["clip_id"] for r in rows) == ["a", "b", "c", "rare"]
    for r in rows:
        assert r["num_frames"] == len(r["surprise"]) == 4
        assert math.isnan(r["surprise"][0]) and math.isnan(r["surprise"][1]) and not np.isnan(r["surprise"][2:]).any()
        assert r["surprise_max"] == pytest.approx(max(r["surprise"][2:]))
        assert r["peak_frame"] == 2 + int(np.argmax(r["surprise"][2:]))
    rare = next(r for r in rows if r["clip_id"] == "rare")
    assert (rare["weather"], rare["scene"], json.loads(rare["attributes"])) == ("snowy", "", {"weather": "snowy"})
    assert json.loads(table.schema.metadata[b"openvica"])["by"] == "max"


def test_without_frames_in_the_store_the_contact_sheet_shows_the_decoded_tokens(mined, rare_store, test_bundle):
    from openvica_sim.data.store import TokenStore
    from openvica_sim.frames import postprocess

    _, out = mined
    sheet = read_image(mining.contact_sheet_path(out))
    assert mining.contact_sheet_path(out).name == "surprise_top.png"
    tokens = torch.from_numpy(TokenStore(rare_store).clip("rare")["tokens"].astype(np.int64))
    peak = postprocess(test_bundle.tokenizer.decode(tokens))[3]  # the window is the whole 4-frame clip
    assert _contains(sheet, peak)


def test_the_cli_mines_an_ingested_store_prints_a_json_summary_and_shows_the_stores_frames(
        frame_store, test_bundle, tmp_path, capsys):
    from openvica_sim.bundle import save_bundle
    from openvica_sim.data.store import TokenStore

    bundle = save_bundle(test_bundle, tmp_path / "bundle")
    out = tmp_path / "out" / "mined.parquet"
    assert _cli(["mine", "--clips", str(frame_store), "--bundle", str(bundle), "--out", str(out), "--top", "1",
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 2 and summary["frames_scored"] == summary["frames"] - 2 * 2
    first = summary["top"][0]
    assert first["rank"] == 0 and summary["contact_sheet"] == str(mining.contact_sheet_path(out))
    row = pq.read_table(out).slice(0, 1).to_pylist()[0]
    clip = TokenStore(frame_store).clip(first["clip_id"])
    assert row["weather"] == clip["attributes"]["weather"] and row["scene"] == clip["attributes"]["scene"]
    assert row["num_frames"] == 8  # the whole clip is on the sheet
    assert _contains(read_image(summary["contact_sheet"]), clip["frames"][first["peak_frame"]])


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        _cli(["mine", "--help"])
    text = capsys.readouterr().out
    for option in ("--clips", "--bundle", "--out", "--by", "--top", "--stride", "--batch-size", "--limit", "--device"):
        assert option in text


# ---- errors ------------------------------------------------------------------------------------------------------

def test_a_missing_store_is_named_with_the_command_that_makes_one(test_bundle, tmp_path):
    with pytest.raises(FileNotFoundError, match="no token store at .*openvica data ingest"):
        mining.mine(tmp_path / "nowhere.zarr", test_bundle, tmp_path / "x.parquet")


def test_a_missing_bundle_is_named(rare_store, tmp_path):
    with pytest.raises(FileNotFoundError, match="no simulator bundle at"):
        mining.mine(rare_store, tmp_path / "no-bundle", tmp_path / "x.parquet")


def test_a_store_of_another_token_grid_is_refused_with_both_grids(test_bundle, tmp_path):
    store = write_store(tmp_path / "s.zarr", [{"clip_id": "v", "tokens": np.zeros((4, 8, 8), np.uint16)}],
                        token_shape=(8, 8))
    with pytest.raises(ValueError, match="'v' .* has a 8x8 token grid but bundle .* has 16x16 .* re-ingest"):
        mining.mine(store, test_bundle, tmp_path / "x.parquet")


def test_a_store_of_a_larger_codebook_is_refused_with_the_code_and_the_codebook_size(test_bundle, tmp_path):
    tokens = np.zeros((4, GRID, GRID), np.uint16)
    tokens[2, 5, 5] = 900
    store = write_store(tmp_path / "s.zarr", [{"clip_id": "v", "tokens": tokens}], codebook_size=1024)
    with pytest.raises(ValueError, match="holds code 900 but bundle .* has a codebook of 64 codes"):
        mining.mine(store, test_bundle, tmp_path / "x.parquet")


@pytest.mark.parametrize("option, match", [({"by": "median"}, "by='median'"), ({"stride": 0}, "stride=0"),
                                           ({"top": -1}, "top=-1"), ({"batch_size": 0}, "batch_size=0")])
def test_bad_options_are_refused_before_any_work(option, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        mining.mine(tmp_path / "not-read.zarr", tmp_path / "not-read", tmp_path / "x.parquet", **option)


# ---- helpers -----------------------------------------------------------------------------------------------------

def _cli(argv):
    """The subcommand as `openvica scenarios` wires it: add_parser on a subparsers action, then args.run."""
    parser = argparse.ArgumentParser(prog="openvica scenarios")
    mining.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.run(args)


def _contains(sheet: np.ndarray, frame: np.ndarray) -> bool:
    """Whether the contact sheet shows `frame` pixel for pixel somewhere on it."""
    h, w = frame.shape[:2]
    return any(np.array_equal(sheet[y:y + h, x:x + w], frame)
               for y in range(sheet.shape[0] - h + 1) for x in range(0, sheet.shape[1] - w + 1, 4)
               if np.array_equal(sheet[y, x], frame[0, 0]))
