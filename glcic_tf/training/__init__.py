"""The paper's three-phase training (Algorithm 1), read top-down: `losses` (pure functions),
`trainer` (the GAN as a keras.Model and its train_step), `inputs` (what the step reads),
`distribute` (strategies, the multi-worker loop), `callbacks` (checkpoints, TensorBoard, stops),
`loop` (`run_training`), `runs` (the run directory it writes), `memory` (the per-replica memory
check) and `job` (what `pipelines/train.py` runs)."""
