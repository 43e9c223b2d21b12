"""ADAPT's DANN with kerastl's networks for configs/digits_dann.yaml, run in its own process by
adapt_peer.py (from the repository root):
    python benchmarks/perf/adapt_dann_child.py STEPS
"""
import json, os, sys, time
t0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras, tensorflow as tf
from adapt.feature_based import DANN
from adapt.utils import UpdateLambda
from kerastl.adaptation.dann import discriminator
from kerastl.config import load_config
from kerastl.data.domain import load_domain
from kerastl.data.pipeline import build_dataset
from kerastl.models.factory import build_classifier

steps = int(sys.argv[1])
cfg = load_config("configs/digits_dann.yaml")
tf.config.threading.set_intra_op_parallelism_threads(cfg.train.intra_op_threads)
keras.utils.set_random_seed(0)

def arrays(split, classes):
    xs, ys = [], []
    for x, y in build_dataset(split, cfg.model.input_size, 256, classes):
        xs.append(x.numpy()), ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)

source = load_domain(cfg.source, cfg.seed, "source")
target = load_domain(cfg.target, cfg.seed, "target")
xs, ys = arrays(source.splits["train"], source.num_classes)
xt, _ = arrays(target.splits["train"], target.num_classes)
x_test, y_test = arrays(target.splits["test"], target.num_classes)
# kerastl's networks for this config: backbone + bottleneck as the encoder, its head, its
# discriminator (ADAPT's DANN wants probabilities: a sigmoid after the logit).
classifier = build_classifier(cfg.model, source.num_classes)
disc = keras.Sequential([discriminator(classifier.features.output_shape[-1], 1024, "discriminator"),
                         keras.layers.Activation("sigmoid")])
a = cfg.adapt

class Annealed(keras.callbacks.Callback):
    # kerastl's (and TLlib's) lr / (1 + alpha p)^beta over the run's steps, set before every
    # step on ADAPT's three optimizers (ADAPT rebuilds optimizers from their configs, which
    # a custom schedule object does not survive).
    def on_train_batch_begin(self, batch, logs=None):
        p = min(float(self.model.optimizer.iterations.numpy()) / steps, 1.0)
        lr = a.lr / (1.0 + a.anneal_alpha * p) ** a.anneal_beta
        for o in (self.model.optimizer, self.model.optimizer_enc, self.model.optimizer_disc):
            o.learning_rate = lr

def sgd():
    return keras.optimizers.SGD(a.lr, momentum=0.9, nesterov=True, weight_decay=a.weight_decay)

batch = cfg.train.batch_size // 2  # 32 source + 32 target images per step, as kerastl's
per_epoch = -(-len(xs) // batch)
model = DANN(classifier.features, classifier.head, disc, Xt=xt, lambda_=tf.Variable(0.0),
             optimizer=sgd(), optimizer_enc=sgd(), optimizer_disc=sgd(), loss="categorical_crossentropy",
             random_state=0, verbose=0)
started = time.perf_counter()
model.fit(xs, ys, epochs=max(1, round(steps / per_epoch)), batch_size=batch, verbose=0,
          callbacks=[UpdateLambda(lambda_max=1.0, max_steps=steps, gamma=a.params.get("gamma", 10.0)), Annealed()])
fit_s = time.perf_counter() - started
accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test.argmax(-1)))
print(json.dumps({"fit_s": fit_s, "steps": max(1, round(steps / per_epoch)) * per_epoch,
                  "process_s": time.perf_counter() - t0, "target_test_accuracy": accuracy}))
