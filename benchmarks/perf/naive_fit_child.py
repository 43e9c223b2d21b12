"""The article's naive fine-tuning recipe, run in its own process by naive_fit.py:
    python benchmarks/perf/naive_fit_child.py FOLDER TEST_NPZ SOURCE_RUN EPOCHS
"""
import json, sys, time
t0 = time.perf_counter()
import keras, numpy as np
folder, test_npz, weights_run, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keras.utils.set_random_seed(0)
# The article's recipe in Keras: a pretrained network, a new last layer, Adam 1e-3 on every
# weight, the image folder read and decoded anew every epoch, batch 32, no cache, no prefetch.
trained = keras.saving.load_model(weights_run + "/model.keras", compile=False)
features = keras.Model(trained.input, trained.get_layer("pool").output)
model = keras.Sequential([features, keras.layers.Dense(10, activation="softmax")])
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
data = keras.utils.image_dataset_from_directory(folder, image_size=(32, 32), batch_size=32, shuffle=True,
                                               seed=0, verbose=False)
test = np.load(test_npz)
timeline, clock = [], [0.0]

class Timeline(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        clock[0] += time.perf_counter() - self.start  # the test below is not the recipe's
        accuracy = float(np.mean(model.predict(test["x"], verbose=0).argmax(-1) == test["y"]))
        timeline.append({"epoch": epoch + 1, "train_s": clock[0], "test_accuracy": accuracy})

start = time.perf_counter() - t0
model.fit(data, epochs=epochs, verbose=0, callbacks=[Timeline()])
print(json.dumps({"startup_s": start, "timeline": timeline}))
