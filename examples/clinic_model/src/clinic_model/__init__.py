"""A classifier over tabular clinical measurements: a torch model and a class-weighted loop."""

from .model import ClinicMlp
from .train import weighted_trainer

__all__ = ["ClinicMlp", "weighted_trainer"]
