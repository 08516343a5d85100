"""`openvica eval` (issue 17): the paper's video and image protocols on a tiny random bundle and the shipped clips,
with tiny feature networks in the real formats. What a user relies on: every row and setting is recorded, reruns
give the same numbers, a killed run resumes from its cached rollouts, the sweep shares one prefill per clip, the
evaluation's rollouts are the simulator's, and command adherence sits at chance for a bundle that ignores commands."""

import json

import numpy as np
import pytest
import torch

from openvica_sim import embedded
from openvica_sim.bundle import save_bundle
from openvica_sim.cli import main
from openvica_sim.evaluation import FeatureNetworks, VideoEvalSettings, evaluate_video
from openvica_sim.evaluation.rollouts import sampler_seed
from openvica_sim.simulator import Simulator

N = 3  # predicted frames: enough to see the protocol, few enough for CI


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, test_bundle):
    return str(save_bundle(test_bundle, tmp_path_factory.mktemp("eval") / "bundle"))


@pytest.fixture(scope="module")
def ego_probe(tmp_path_factory):
    from openvica_sim.models.ego_probe import EgoProbe, EgoProbeConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("probe") / "ego_probe"
    EgoProbe(EgoProbeConfig(image_size=32, widths=(8, 8), speed_mean_mps=10, speed_std_mps=5, yaw_std_rps=0.1)
             ).save_pretrained(path, {"speed_mae_mps": 1.0})
    return str(path)


def settings(bundle_dir, feature_networks, **overrides):
    nets = FeatureNetworks(inception=feature_networks["inception"], i3d=feature_networks["i3d"],
                           clip_model=feature_networks["clip"], lpips_net=feature_networks["alexnet"])
    return VideoEvalSettings(**{"bundle": bundle_dir, "clips": str(embedded.clips_path()), "limit": 2,
                                "num_frames": N, "top_k": [1, 10], "networks": nets, **overrides})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, bundle_dir, feature_networks):
    out = tmp_path_factory.mktemp("eval-out")
    return out, evaluate_video(settings(bundle_dir, feature_networks), out, progress=False)


def test_metrics_json_has_one_row_per_system_k_and_decoder_with_every_metric(evaluated):
    out, result = evaluated
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    keys = [(r["system"], r["k"], r["decoder"]) for r in result["results"]]
    assert keys == [("copy-last", None, None), ("tok+dec", None, "dec"), ("tok+wm+dec", 1, "dec"), ("tok+wm+dec", 10, "dec"),
                    ("tok+vdec", None, "vdec"), ("tok+wm+vdec", 1, "vdec"), ("tok+wm+vdec", 10, "vdec")]
    for row in result["results"]:
        metrics = ("fid", "fvd", "cmmd", "mse", "psnr", "ssim", "ms_ssim", "lpips")
        for metric in metrics + (("surprise",) if row["system"] != "copy-last" else ()):
            assert isinstance(row[metric], float) and np.isfinite(row[metric]), (row["system"], metric)
        assert row["clips"] == 2 and len(row["per_frame"]["psnr"]) == N and len(row["per_clip"]["mse"]) == 2
    copy_last = result["results"][0]
    assert copy_last["surprise"] is None and copy_last["mse"] > 0
    assert set(result["skipped"]) == {"adherence"}


def test_settings_record_what_the_numbers_depend_on(evaluated, feature_networks):
    s = evaluated[1]["settings"]
    assert len(s["bundle_sha256"]) == len(s["clip_list_sha256"]) == 64 and s["num_clips"] == 2
    assert s["seed"] == 0 and s["top_k"] == [1, 10] and s["decoders"] == ["vdec", "dec"]
    assert s["seed_frames"] == 2 and s["num_frames"] == N and s["dtype"] == "float32"
    assert set(s["feature_networks"]) == {"fid", "fvd", "cmmd", "lpips", "lpips_linear"}
    assert s["feature_networks"]["fid"]["path"] == str(feature_networks["inception"])
    assert {"torch", "transformers", "diffusers", "torchmetrics", "numpy"} <= set(s["versions"])


def test_report_pictures_and_cached_rollouts_are_written(evaluated):
    out, _ = evaluated
    report = (out / "report.md").read_text()
    assert "OpenViCA (TOK+WM+VDEC)" in report and "646.03" in report  # the paper's k = 1 FVD beside ours
    for name in ("per_frame.png", "top_k.png", "samples.png"):
        assert (out / name).stat().st_size > 1000
    assert sorted(p.name for p in (out / "rollouts").iterdir()) == ["k1", "k10", "settings.json"]


def test_a_rerun_resumes_from_the_cache_and_gives_the_same_numbers(evaluated, bundle_dir, feature_networks,
                                                                   monkeypatch):
    out, first = evaluated
    cached = sorted((out / "rollouts" / "k10").iterdir())
    cached[0].unlink()  # as if killed before this clip's k = 10 rollout was written

    import openvica_sim.evaluation.rollouts as rollouts

    calls = []
    original = rollouts.rollout_jobs

    def counting(simulator, jobs):
        calls.append([(j.clip_id, [v.name for v in j.variants]) for j in jobs])
        return original(simulator, jobs)

    monkeypatch.setattr(rollouts, "rollout_jobs", counting)
    again = evaluate_video(settings(bundle_dir, feature_networks), out, progress=False)
    assert calls == [[(cached[0].stem, ["k10"])]]  # only what was missing
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]  # noqa: E731
    assert strip(again["results"]) == strip(first["results"])


def test_another_evaluation_in_the_same_folder_is_refused(evaluated, bundle_dir, feature_networks):
    out, _ = evaluated
    with pytest.raises(ValueError, match=r"another evaluation.*seed"):
        evaluate_video(settings(bundle_dir, feature_networks, seed=1), out, progress=False)


def test_the_evaluations_rollouts_are_the_simulators(evaluated, bundle_dir, test_bundle):
    out, _ = evaluated
    from openvica_sim.data.clips import FolderClips

    source = FolderClips(embedded.clips_path())
    clip_id = source.clip_ids[0]
    frames = source.frames(clip_id, 2)[None]
    expected = Simulator(test_bundle, top_k=10).rollout(frames, N, seeds=[sampler_seed(0, clip_id)])
    with np.load(out / "rollouts" / "k10" / f"{clip_id}.npz") as cached:
        np.testing.assert_array_equal(cached["tokens"][:N], expected.tokens[0])
        np.testing.assert_allclose(cached["surprise"][:N], expected.surprise[0], rtol=1e-6)


def test_the_top_k_sweep_prefills_each_batch_of_clips_once(bundle_dir, feature_networks, tmp_path, monkeypatch):
    starts = []
    original = Simulator.start

    def counting(self, *args, **kwargs):
        starts.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Simulator, "start", counting)
    evaluate_video(settings(bundle_dir, feature_networks, top_k=[1, 5, 20], decoders=["dec"], transcode=False,
                            networks=FeatureNetworks()), tmp_path, progress=False)
    assert len(starts) == 1  # 2 clips in one batch, 3 values of k: one prefill


def test_a_metric_without_its_network_is_null_and_listed_with_its_flag(bundle_dir, tmp_path):
    result = evaluate_video(VideoEvalSettings(bundle=bundle_dir, clips=str(embedded.clips_path()), limit=2,
                                              num_frames=2, decoders=["dec"]), tmp_path, progress=False)
    row = result["results"][2]
    assert row["system"] == "tok+wm+dec" and row["fid"] is None and row["fvd"] is None and row["cmmd"] is None and row["lpips"] is None
    assert row["psnr"] is not None and row["ssim"] is not None
    assert "--inception" in result["skipped"]["fid"] and "--i3d" in result["skipped"]["fvd"]
    assert "--clip-model" in result["skipped"]["cmmd"] and "--lpips-net" in result["skipped"]["lpips"]


def test_adherence_of_a_bundle_that_ignores_commands_is_exactly_chance(bundle_dir, ego_probe, tmp_path):
    result = evaluate_video(VideoEvalSettings(bundle=bundle_dir, clips=str(embedded.clips_path()), limit=3,
                                              num_frames=2, decoders=["dec"], transcode=False, ego_probe=ego_probe),
                            tmp_path, progress=False)
    adherence = result["adherence"]
    assert adherence["replay"]["ratio"] == 1.0 and adherence["replay"]["clips"] == 3
    assert adherence["counterfactual"]["accuracy"] == 0.5 and adherence["counterfactual"]["left_vs_right"] == 0.5
    assert "ignores its commands" in adherence["note"]
    assert result["settings"]["ego_probe_accuracy"] == {"speed_mae_mps": 1.0}


def ego_ids_alike(bundle):
    """A copy of an action-conditioned bundle whose ego ids (the "unknown" ones too) all embed alike: the commands
    reach the WM but say nothing."""
    import copy

    bundle = copy.deepcopy(bundle)
    coding, config = bundle.action_coding, bundle.world_model.config
    first = config.vision_id(coding.first_vision_id)
    with torch.no_grad():
        rows = bundle.world_model.llama.model.embed_tokens.weight[first:first + coding.num_ids]
        rows[:] = rows[0]
    return bundle


def test_adherence_with_commands_the_world_model_cannot_tell_apart_is_chance(action_bundle, ego_probe, tmp_path):
    """An action-conditioned bundle whose ego ids all embed alike: the commands reach the WM but say nothing."""
    path = save_bundle(ego_ids_alike(action_bundle), tmp_path / "bundle")
    result = evaluate_video(VideoEvalSettings(bundle=str(path), clips=str(embedded.clips_path()), limit=3,
                                              num_frames=2, decoders=["dec"], transcode=False, ego_probe=ego_probe),
                            tmp_path / "eval", progress=False)
    assert result["adherence"]["action_conditioned"] is True
    assert result["adherence"]["replay"]["ratio"] == 1.0
    assert result["adherence"]["counterfactual"]["accuracy"] == 0.5


def test_ego_information_is_what_the_true_ego_ids_save_the_world_model_on_the_real_frames(action_bundle, tmp_path):
    """Teacher-forced surprise at the real continuation is taken with the clip's own ego motion, and again with every
    ego id "unknown": the difference is what the commands tell the WM. Exactly 0 when the ego ids all embed alike,
    absent without the transcoding rows (which score the real frames)."""
    from openvica_sim.data.clips import FolderClips

    def evaluate(bundle, name, **overrides):
        path = save_bundle(bundle, tmp_path / name)
        settings = {"limit": 2, "num_frames": 2, **overrides}
        return evaluate_video(VideoEvalSettings(bundle=str(path), clips=str(embedded.clips_path()), decoders=["dec"],
                                                top_k=[1], **settings), tmp_path / f"{name}-eval", progress=False)

    result = evaluate(action_bundle, "conditioned")
    info = result["ego_information"]
    assert info["clips"] == 2 and info["nats_per_code"] == info["surprise_without_ego"] - info["surprise_with_ego"]
    assert abs(info["nats_per_code"]) > 1e-4  # a random WM's predictions move with its ego ids
    source, sim = FolderClips(embedded.clips_path()), Simulator(action_bundle)
    expected = []
    for clip_id in source.clip_ids[:2]:
        codes = sim.encode(source.frames(clip_id, 4))
        speed, yaw = source.ego(clip_id)
        expected.append(sim.score([codes], [speed[:4]], [yaw[:4]])[0][2:])
    tok_dec = next(r for r in result["results"] if r["system"] == "tok+dec")
    assert tok_dec["surprise"] == pytest.approx(info["surprise_with_ego"])
    assert tok_dec["surprise"] == pytest.approx(float(np.mean(expected)), rel=1e-6)

    assert evaluate(ego_ids_alike(action_bundle), "alike")["ego_information"]["nats_per_code"] == 0.0
    assert evaluate(action_bundle, "untranscoded", limit=1, num_frames=1, transcode=False)["ego_information"] is None


def test_eval_images_gives_the_tok_dec_reconstruction_row(bundle_dir, feature_networks, tmp_path):
    from openvica_sim.video_io import write_image

    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(tmp_path / "images" / f"{i}.png", rng.integers(0, 256, (180, 320, 3), dtype=np.uint8))
    code = main(["eval", "images", "--bundle", bundle_dir, "--images", str(tmp_path / "images"),
                 "--inception", str(feature_networks["inception"]), "--out", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    row = result["results"][0]
    assert row["system"] == "tok+dec" and row["images"] == 3
    assert row["fid"] is not None and row["psnr"] is not None and row["cmmd"] is None
    assert "25.14" in (tmp_path / "out" / "report.md").read_text()  # the paper's Table III beside ours


def test_the_cli_names_a_missing_feature_network_and_its_flag(bundle_dir, tmp_path, capsys):
    code = main(["eval", "video", "--bundle", bundle_dir, "--i3d", str(tmp_path / "absent.pt"),
                 "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "absent.pt" in err and "i3d_torchscript.pt" in err and "--i3d" in err


def test_eval_help_names_its_guide(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "video", "--help"])
    assert "docs/evaluate.md" in capsys.readouterr().out
