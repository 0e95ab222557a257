"""python eval.py experiment=<name> [model=hf model.name_or_path=DIR | ckpt_path=CKPT] [key=value ...]

Evaluates a saved model or a Lightning checkpoint without training — see README.md and conf/eval.yaml."""
import hydra
from omegaconf import DictConfig

from posttrain.pipeline import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from posttrain.pipeline import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
