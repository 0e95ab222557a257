"""python train.py experiment=<name> [key=value ...]  — see README.md and conf/train.yaml."""
import hydra
from omegaconf import DictConfig

from posttrain.pipeline import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from posttrain.pipeline import train

    train(cfg)


if __name__ == "__main__":
    main()
