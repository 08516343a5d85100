"""training/wm.py on Ray: 2 CPU workers train with DDP, and `ray job submit` runs the script on a `ray start` cluster."""

import json
import math

from test_train_wm import config, store  # noqa: F401  (the tiny synthetic store fixture)


def test_two_ray_workers_train_with_ddp_and_checkpoint(store, tmp_path):  # noqa: F811
    import ray

    from openvica_sim.training.wm import run

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=256 << 20)
    try:
        run(config(store, tmp_path / "run", "scaling.num_workers=2", "trainer.max_steps=3",
                   "trainer.checkpoint_every=3", "trainer.batch_size=4"))
    finally:
        ray.shutdown()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert (tmp_path / "run" / "checkpoints" / "step-0000003" / "COMPLETE").is_file()
    assert (tmp_path / "run" / "world_model" / "config.json").is_file()


def test_ray_job_submit_runs_the_training_script_on_a_local_cluster(store, tmp_path, ray_cluster):  # noqa: F811
    overrides = ["model=tiny", "model.preset=test", f"data.store={store}", "data.num_future_frames=2",
                 "data.loader_workers=0", f"run.dir={tmp_path / 'run'}", "trainer.batch_size=2",
                 "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.log_every=1"]
    job = ray_cluster.submit("python", "training/wm.py", *overrides, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "COMPLETE").is_file()
    assert (tmp_path / "run" / "world_model" / "config.json").is_file()


def test_two_ray_workers_train_the_tokenizer_with_gan_and_code_restarts(frame_store, tmp_path):
    """TOK's DDP path: two wrapped modules (TOK+DEC, D), code usage summed over ranks, restarts broadcast."""
    import ray

    from test_train_tok import config as tok_config
    from openvica_sim.training.tok import run

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=256 << 20)
    try:
        run(tok_config(frame_store, tmp_path / "run", {"perceptual_net": "null", "teacher": "null"},
                       "loss.perceptual=0", "loss.ssl=0", "scaling.num_workers=2", "trainer.batch_size=2",
                       "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.gan_start=0",
                       "trainer.dead_code_restart_every=1"))
    finally:
        ray.shutdown()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and "discriminator" in metrics[0]
    assert metrics[0]["codes_restarted"] > 0
    assert (tmp_path / "run" / "tokenizer" / "config.json").is_file()


def test_two_workers_shard_the_world_model_with_fsdp_and_a_killed_worker_is_retried_from_the_last_checkpoint(
        store, tmp_path):  # noqa: F811
    """FSDP2 on 2 CPU workers (gloo), checkpoints gathered from the shards; a worker SIGKILLed mid-run is
    restarted by Ray Train (scaling.max_failures) and the loop resumes from the last complete checkpoint."""
    import threading
    import time

    import psutil
    import ray

    from openvica_sim.models.world_model import WorldModel
    from openvica_sim.training.wm import run

    run_dir = tmp_path / "run"
    killed = []

    def kill_a_worker_after_the_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if (run_dir / "checkpoints" / "step-0000002" / "COMPLETE").is_file():
                workers = [p for p in psutil.process_iter(["cmdline"])
                           if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
                if workers:
                    workers[-1].kill()
                    killed.append(workers[-1].pid)
            time.sleep(0.05)

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=256 << 20)
    killer = threading.Thread(target=kill_a_worker_after_the_first_checkpoint, daemon=True)
    killer.start()
    try:
        run(config(store, run_dir, "scaling.num_workers=2", "scaling.strategy=fsdp", "scaling.max_failures=1",
                   "trainer.max_steps=12", "trainer.checkpoint_every=2", "trainer.batch_size=2"))
    finally:
        ray.shutdown()
    assert killed, "no Ray Train worker was found to kill"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 13))  # steps after the last checkpoint redone once
    assert all(math.isfinite(m["loss"]) for m in metrics)
    assert (run_dir / "checkpoints" / "step-0000012" / "COMPLETE").is_file()
    wm = WorldModel.from_pretrained(run_dir / "world_model")  # exported whole from the shards
    assert wm.config.codebook_size == 64
