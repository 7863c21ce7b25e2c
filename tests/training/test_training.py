"""The training loop on CPU: it learns, logs, checkpoints, resumes, and runs under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import medvae
from medvae.config import load_config
from medvae.training import train
from tests.conftest import CORPUS, REPO

pytestmark = pytest.mark.skipif(not (CORPUS / "MANIFEST.csv").is_file(), reason=f"corpus not found at {CORPUS}")


def tiny_config(out_dir, *overrides):
    return load_config(
        REPO / "configs/tiny-cpu.yaml",
        [f"train.out_dir={out_dir}", f"data.manifest={CORPUS / 'MANIFEST.csv'}", *overrides],
    )


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    torch.set_num_threads(2)
    train(tiny_config(out), device="cpu")
    return out


def test_tiny_config_trains_and_the_loss_falls(tiny_run):
    loss = [v for _, v in scalars(tiny_run, "train/loss")]
    assert len(loss) >= 4
    assert loss[-1] < 0.5 * loss[0]
    assert (tiny_run / "last.pt").is_file() and (tiny_run / "best.pt").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (tiny_run / "tb").iterdir())
    assert {"val/bpp", "val/psnr", "val/ms_ssim", "train/aux_loss", "train/lr"} <= set(
        EventAccumulator(str(tiny_run / "tb")).Reload().Tags()["scalars"]
    )


def test_checkpoint_codes_through_medvae_load(tiny_run, ct_like):
    codec = medvae.load(tiny_run / "best.pt")
    data = codec.compress(ct_like)
    restored = codec.decompress(data)
    np.testing.assert_array_equal(restored, codec.reconstruct(ct_like)[0])
    state = torch.load(tiny_run / "last.pt", weights_only=False)
    assert state["step"] == 40 and {"optimizer", "aux_optimizer", "scheduler", "config"} <= set(state)


def test_existing_run_is_not_overwritten(tiny_run):
    with pytest.raises(medvae.MedVAEError, match="already holds a run"):
        train(tiny_config(tiny_run), device="cpu")


def test_resume_continues_the_same_curve(tiny_run, tmp_path):
    out = tmp_path / "resumed"
    train(tiny_config(out, "train.iterations=20"), device="cpu")
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 20
    train(tiny_config(out), resume="auto", device="cpu")
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 40
    full = dict(scalars(tiny_run, "train/loss"))
    resumed = dict(scalars(out, "train/loss"))
    assert sorted(resumed) == sorted(full)
    for step in full:
        assert resumed[step] == pytest.approx(full[step], rel=0.05), step


def test_two_process_gloo_ddp_run_completes(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(REPO / "train.py"), "--config", str(REPO / "configs/tiny-cpu.yaml"), "--device", "cpu",
        f"train.out_dir={out}", f"data.manifest={CORPUS / 'MANIFEST.csv'}", "train.iterations=6",
        "train.val_interval=6", "train.checkpoint_interval=6", "train.log_interval=2",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 6
    assert len(list((out / "tb").iterdir())) == 1  # only rank 0 writes logs


def test_fine_tune_from_a_narrower_latent_widens_it(tiny_run, tmp_path):
    """``train.init_from`` with a larger ``model.M`` starts from the widened weights."""
    out = tmp_path / "wide"
    start = medvae.load(tiny_run / "best.pt").model
    train(tiny_config(out, "model.M=32", "train.iterations=5", f"train.init_from={tiny_run / 'best.pt'}"), device="cpu")
    wide = medvae.load(out / "last.pt").model
    assert wide.config["M"] == 32
    # The new latent channels entered g_s through zero weights; five Adam steps at lr 1e-3
    # move a weight by at most about 5e-3, so they are still far smaller than the old ones
    # (a run that ignored init_from would have them all alike).
    g_s_in = wide.g_s[0].weight  # ConvTranspose2d: (in = M, out, k, k)
    assert g_s_in[24:].abs().max() < 0.2 * g_s_in[:24].abs().max()
    assert torch.allclose(g_s_in[:24], start.g_s[0].weight, atol=0.01)


def test_patient_balanced_training_runs_and_a_wrong_balance_is_refused(tmp_path):
    """``data.balance: patients`` trains (every patient drawn equally often); an unknown balance is a clear error."""
    with pytest.raises(medvae.MedVAEError, match="data.balance"):
        train(tiny_config(tmp_path / "bad", "data.balance=volumes"), device="cpu")
    out = train(tiny_config(tmp_path / "balanced", "data.balance=patients", "train.iterations=4", "train.val_interval=4"), device="cpu")
    assert (out / "last.pt").is_file()


def test_variable_rate_levels_come_from_the_config(tmp_path):
    """``model.lmbdas`` trains a variable-rate family with those levels (the equal-budget runs use
    two); a single-rate family refuses it."""
    out = train(tiny_config(tmp_path / "vr", "model.name=medvae-vr", "model.lmbdas=[0.03,1.2]", "train.iterations=3",
                            "train.val_interval=3"), device="cpu")
    codec = medvae.load(out / "last.pt")
    assert codec.model.config["lmbdas"] == [0.03, 1.2]
    assert codec.quality_range == (0.0, 2.0)
    with pytest.raises(TypeError, match="lmbdas"):
        train(tiny_config(tmp_path / "single", "model.lmbdas=[0.03,1.2]", "train.iterations=3"), device="cpu")


def test_bf16_autocast_is_flagged_slow_on_x86_cpus_where_it_was_measured_slow(tmp_path):
    from medvae.training.step import cpu_flags, cpu_vendor, slow_bf16

    cpu, intel, amd = torch.device("cpu"), "GenuineIntel", "AuthenticAMD"
    assert "emulated" in slow_bf16(cpu, {"sse4_1", "avx2", "fma"}, amd)  # AVX2 alone: emulated bf16
    assert "no AMX" in slow_bf16(cpu, {"avx2", "avx512f", "avx512_bf16"}, intel)  # Intel without AMX: 0.7x
    assert slow_bf16(cpu, {"avx2", "avx512f", "avx512_bf16"}, amd) is None  # AMD Zen 4: 1.9x faster
    assert slow_bf16(cpu, {"avx2", "avx512_bf16", "amx_bf16"}, intel) is None  # AMX
    assert slow_bf16(torch.device("meta"), {"avx2"}, intel) is None  # not a CPU (CUDA has native bf16)
    assert slow_bf16(cpu, {"neon"}) is None and cpu_flags(tmp_path / "absent") is None  # unknown: no warning
    assert cpu_vendor(tmp_path / "absent") is None
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                    "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"} and cpu_vendor(info) == intel


def test_a_wall_time_budget_cuts_the_iterations_and_the_schedule_follows(tmp_path):
    """``train.minutes`` measures the speed, stops the run within its budget with a final
    checkpoint, rebuilds the learning-rate schedule for the new count (its decay happens, once)
    and records the count where a resumed run reads it; a budget that is not a positive number
    is refused."""
    out = train(tiny_config(tmp_path / "budget", "train.iterations=100000", "train.minutes=0.01", "train.val_interval=1000",
                            "optim.scheduler=multistep", "optim.milestones=[0.5]", "optim.gamma=0.1"), device="cpu")
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["step"] == state["config"]["train"]["iterations"] < 1000
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # 1e-3 decayed once
    assert load_config(out / "config.yaml")["train"]["iterations"] == state["step"]
    with pytest.raises(medvae.MedVAEError, match="train.minutes"):
        train(tiny_config(tmp_path / "bad", "train.minutes=0"), device="cpu")


def test_a_generous_budget_keeps_the_iterations_and_a_cosine_schedule_is_rebuilt_from_the_base_rate(tmp_path):
    """A budget the run fits in changes nothing; a cut cosine schedule ends where a run planned
    for that count would (no decay carried over from the longer plan)."""
    out = train(tiny_config(tmp_path / "roomy", "train.iterations=70", "train.minutes=60", "train.val_interval=1000"), device="cpu")
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 70
    out = train(tiny_config(tmp_path / "cosine", "train.iterations=100000", "train.minutes=0.01", "train.val_interval=1000",
                            "optim.scheduler=cosine"), device="cpu")
    state = torch.load(out / "last.pt", weights_only=False)
    planned = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3), T_max=state["step"], eta_min=1e-5)
    for _ in range(state["step"]):
        planned.optimizer.step()
        planned.step()
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(planned.get_last_lr()[0], rel=1e-6)
