from datamodules.tasks.arithmetic import ArithmeticTask

__all__ = ["ArithmeticTask"]
