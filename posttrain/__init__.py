"""posttrain: post-training methods as Lightning modules over shared data modules, with compiled hot loops."""

__version__ = "0.1.0"
