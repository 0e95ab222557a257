from datamodules.tasks.arithmetic import ArithmeticTask
from datamodules.tasks.arithmetic_pairs import ArithmeticPairTask
from datamodules.tasks.decomposition import DecompositionTask
from datamodules.tasks.shapes import ShapesTask

__all__ = ["ArithmeticPairTask", "ArithmeticTask", "DecompositionTask", "ShapesTask"]
