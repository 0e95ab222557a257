from datamodules.tasks.arithmetic import ArithmeticTask
from datamodules.tasks.arithmetic_pairs import ArithmeticPairTask

__all__ = ["ArithmeticPairTask", "ArithmeticTask"]
