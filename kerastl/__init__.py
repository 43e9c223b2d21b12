"""kerastl: transfer learning with TensorFlow/Keras, driven by YAML configs.

Data flow: config.py (YAML -> Config) -> data/ (tf.data splits per domain) -> models/
(keras.applications backbone + head) -> training/ (pretrain, fine-tune) -> evaluation/
-> a run directory (runs.py) that `evaluate` and `predict` read.
"""

__version__ = "0.1.0"
