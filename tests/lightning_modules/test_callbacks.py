"""EarlyStoppingBest stops at the plateau of the monitored metric and hands back the best epoch's weights."""
import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.callbacks import EarlyStoppingBest

SCRIPT = [3.0, 1.0, 2.0, 1.5, 0.5]  # the metric each validation reports: best at epoch 1, then 2 without gain


class Scripted(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Linear(2, 1)
        self.weights_seen: list[torch.Tensor] = []  # the weights each validation saw

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.model(x).pow(2).mean() + self.model.bias.sum()  # always moves the weights

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.weights_seen.append(self.model.weight.detach().clone())
        self.log("val/kl", SCRIPT[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_stops_after_patience_and_restores_the_best_weights():
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    module = Scripted()
    stopper = EarlyStoppingBest(monitor="val/kl", mode="min", patience=2)
    trainer = L.Trainer(max_epochs=len(SCRIPT), callbacks=[stopper], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    assert trainer.current_epoch == 4 and stopper.best_epoch == 1  # epochs 2 and 3 did not beat 1.0: stop
    assert len(module.weights_seen) == 4 and not torch.equal(module.weights_seen[1], module.weights_seen[3])
    assert torch.equal(module.model.weight, module.weights_seen[1])  # the best epoch's weights, not the last
