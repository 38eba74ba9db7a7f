"""Bidirectional LSTM on IMDB: keras-io's examples/nlp/bidirectional_lstm_imdb.py (Keras 3 version;
fchollet), written out again with the same Keras API usage: a functional model, Embedding(20000, 128)
-> Bidirectional(LSTM(64, return_sequences=True)) -> Bidirectional(LSTM(64)) -> Dense(1, sigmoid),
on keras.datasets.imdb.load_data, padded with keras.utils.pad_sequences, trained 2 epochs with
validation_data.

Sizes come from the environment, the example's values being the defaults: PROGRAM_MAXLEN (200),
PROGRAM_EPOCHS (2), PROGRAM_TRAIN_SAMPLES and PROGRAM_VAL_SAMPLES (all 25000: the first N of each
split are kept); PROGRAM_SEED seeds the run (the example is unseeded). The last lines are
machine-readable: PARAMS, LOSS0 (first-epoch training loss), VAL_ACC (last epoch's), FIT_SECONDS.
"""
import os
import time

import keras
from keras import layers

if "PROGRAM_SEED" in os.environ:
    keras.utils.set_random_seed(int(os.environ["PROGRAM_SEED"]))

max_features = 20000  # Only consider the top 20k words
maxlen = int(os.environ.get("PROGRAM_MAXLEN", 200))  # Only consider the first 200 words of each movie review

# Input for variable-length sequences of integers
inputs = keras.Input(shape=(None,), dtype="int32")
# Embed each integer in a 128-dimensional vector
x = layers.Embedding(max_features, 128)(inputs)
# Add 2 bidirectional LSTMs
x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
x = layers.Bidirectional(layers.LSTM(64))(x)
# Add a classifier
outputs = layers.Dense(1, activation="sigmoid")(x)
model = keras.Model(inputs, outputs)
model.summary()

(x_train, y_train), (x_val, y_val) = keras.datasets.imdb.load_data(num_words=max_features)
train_samples = int(os.environ.get("PROGRAM_TRAIN_SAMPLES", len(x_train)))
val_samples = int(os.environ.get("PROGRAM_VAL_SAMPLES", len(x_val)))
x_train, y_train = x_train[:train_samples], y_train[:train_samples]
x_val, y_val = x_val[:val_samples], y_val[:val_samples]
print(len(x_train), "Training sequences")
print(len(x_val), "Validation sequences")
# Use pad_sequence to standardize sequence length:
# this will truncate sequences longer than 200 words and zero-pad sequences shorter than 200 words.
x_train = keras.utils.pad_sequences(x_train, maxlen=maxlen)
x_val = keras.utils.pad_sequences(x_val, maxlen=maxlen)

model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
start = time.perf_counter()
history = model.fit(x_train, y_train, batch_size=32, epochs=int(os.environ.get("PROGRAM_EPOCHS", 2)),
                    validation_data=(x_val, y_val))
fit_seconds = time.perf_counter() - start

print("PARAMS", model.count_params())
print("LOSS0", history.history["loss"][0])
print("VAL_ACC", history.history["val_accuracy"][-1])
print("FIT_SECONDS", fit_seconds)
