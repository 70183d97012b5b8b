"""Training: budgets, the train/eval loop, run directories and the dense fine-tune."""

from fitformer.training.budgets import BUDGETS, Budget, get_budget
from fitformer.training.finetune import DENSE_RECIPE, RunResult, finetune
from fitformer.training.loop import TrainConfig, TrainHook

__all__ = ["BUDGETS", "Budget", "DENSE_RECIPE", "RunResult", "TrainConfig", "TrainHook",
           "finetune", "get_budget"]
