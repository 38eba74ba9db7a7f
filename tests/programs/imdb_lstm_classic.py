"""LSTM for sequence classification on the IMDB data set, the classic tutorial (Brownlee, "Sequence
Classification with LSTM Recurrent Neural Networks in Python with Keras") that lstmfast grew from:
imdb.load_data(num_words=5000), sequence.pad_sequences to 500 words, Embedding(5000, 32,
input_length=500) -> LSTM(100) -> Dense(1, sigmoid), Adam, 3 epochs of batch 64 with validation_data,
then evaluate. The Embedding import is the later tutorial's `from keras.layers import Embedding`
(keras.layers.embeddings is gone from Keras 3).

Sizes come from the environment, the tutorial's values being the defaults: PROGRAM_MAXLEN (500),
PROGRAM_EPOCHS (3), PROGRAM_TRAIN_SAMPLES and PROGRAM_TEST_SAMPLES (all 25000: the first N of each
split are kept); PROGRAM_SEED seeds the run (the tutorial seeds only NumPy, with 7). The last lines
are machine-readable: PARAMS, LOSS0 (first-epoch training loss), ACC (test accuracy), FIT_SECONDS.
"""
import os
import time

import numpy
from keras.datasets import imdb
from keras.layers import LSTM, Dense, Embedding
from keras.models import Sequential
from keras.preprocessing import sequence
from keras.utils import set_random_seed

# fix random seed for reproducibility
numpy.random.seed(7)
if "PROGRAM_SEED" in os.environ:
    set_random_seed(int(os.environ["PROGRAM_SEED"]))
# load the dataset but only keep the top n words, zero the rest
top_words = 5000
(X_train, y_train), (X_test, y_test) = imdb.load_data(num_words=top_words)
train_samples = int(os.environ.get("PROGRAM_TRAIN_SAMPLES", len(X_train)))
test_samples = int(os.environ.get("PROGRAM_TEST_SAMPLES", len(X_test)))
X_train, y_train, X_test, y_test = X_train[:train_samples], y_train[:train_samples], X_test[:test_samples], \
    y_test[:test_samples]
# truncate and pad input sequences
max_review_length = int(os.environ.get("PROGRAM_MAXLEN", 500))
X_train = sequence.pad_sequences(X_train, maxlen=max_review_length)
X_test = sequence.pad_sequences(X_test, maxlen=max_review_length)
# create the model
embedding_vecor_length = 32
model = Sequential()
model.add(Embedding(top_words, embedding_vecor_length, input_length=max_review_length))
model.add(LSTM(100))
model.add(Dense(1, activation="sigmoid"))
model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
print(model.summary())
start = time.perf_counter()
history = model.fit(X_train, y_train, validation_data=(X_test, y_test),
                    epochs=int(os.environ.get("PROGRAM_EPOCHS", 3)), batch_size=64)
fit_seconds = time.perf_counter() - start
# Final evaluation of the model
scores = model.evaluate(X_test, y_test, verbose=0)
print("Accuracy: %.2f%%" % (scores[1] * 100))

print("PARAMS", model.count_params())
print("LOSS0", history.history["loss"][0])
print("ACC", scores[1])
print("FIT_SECONDS", fit_seconds)
