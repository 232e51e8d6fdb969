"""The paper's networks: the completion network (Table 1) and the global and local context
discriminators (`models`), their batch normalization (`batch_norm`), its folding into the
convolutions for inference (`folding`), and the smooth fills of the residual output (`fill`)."""
