"""Char-level text generation on Shakespeare's Macbeth in Keras 2 style, the classic tutorial
(Brownlee, "Text Generation With LSTM Recurrent Neural Networks in Python with Keras", applied to
Macbeth) that lstmfast grew from: the play from get_file, character maps, 100-character windows of
scaled character codes, np_utils.to_categorical targets, LSTM(256, input_shape=...) -> Dropout(0.2) ->
Dense(softmax), Adam(lr=...), a ModelCheckpoint callback that keeps the best model of each epoch,
then load_model of the best checkpoint and greedy generation from a random seed window.

It is Keras 2 code: np_utils, utils.data_utils, Adam(lr=...) and the .hdf5 checkpoint name are Keras
2's spellings, which lstmfast accepts (with DeprecationWarnings) and Keras 3 rejects; the Keras 3 runs
use the port that renames just those (KERAS3_PORT in harness.py).

Sizes come from the environment, the tutorial's values being the defaults: PROGRAM_CORPUS_URL (the
play on Project Gutenberg; the tests give a file:// URL of tiny-shakespeare), PROGRAM_CORPUS_CHARS (the
whole text: the first N characters are kept), PROGRAM_SEQ_LENGTH (100), PROGRAM_EPOCHS (20),
PROGRAM_GENERATE_CHARS (1000); PROGRAM_SEED seeds the run (the tutorial is unseeded). The last lines
are machine-readable: PARAMS, LOSS0 (first-epoch training loss), LOSS (last epoch's), FIT_SECONDS.
"""
import glob
import os
import sys
import time

import numpy
from keras.callbacks import ModelCheckpoint
from keras.layers import LSTM, Dense, Dropout
from keras.models import Sequential, load_model
from keras.optimizers import Adam
from keras.utils import np_utils, set_random_seed
from keras.utils.data_utils import get_file

if "PROGRAM_SEED" in os.environ:
    set_random_seed(int(os.environ["PROGRAM_SEED"]))

# load ascii text and convert to lowercase
filename = get_file("macbeth.txt",
                    origin=os.environ.get("PROGRAM_CORPUS_URL", "https://www.gutenberg.org/cache/epub/1533/pg1533.txt"))
raw_text = open(filename, "r", encoding="utf-8").read()
raw_text = raw_text.lower()
if "PROGRAM_CORPUS_CHARS" in os.environ:
    raw_text = raw_text[: int(os.environ["PROGRAM_CORPUS_CHARS"])]
# create mapping of unique chars to integers, and a reverse mapping
chars = sorted(list(set(raw_text)))
char_to_int = dict((c, i) for i, c in enumerate(chars))
int_to_char = dict((i, c) for i, c in enumerate(chars))
# summarize the loaded data
n_chars = len(raw_text)
n_vocab = len(chars)
print("Total Characters: ", n_chars)
print("Total Vocab: ", n_vocab)
# prepare the dataset of input to output pairs encoded as integers
seq_length = int(os.environ.get("PROGRAM_SEQ_LENGTH", 100))
dataX = []
dataY = []
for i in range(0, n_chars - seq_length, 1):
    seq_in = raw_text[i:i + seq_length]
    seq_out = raw_text[i + seq_length]
    dataX.append([char_to_int[char] for char in seq_in])
    dataY.append(char_to_int[seq_out])
n_patterns = len(dataX)
print("Total Patterns: ", n_patterns)
# reshape X to be [samples, time steps, features]
X = numpy.reshape(dataX, (n_patterns, seq_length, 1))
# normalize
X = X / float(n_vocab)
# one hot encode the output variable
y = np_utils.to_categorical(dataY)
# define the LSTM model
model = Sequential()
model.add(LSTM(256, input_shape=(X.shape[1], X.shape[2])))
model.add(Dropout(0.2))
model.add(Dense(y.shape[1], activation="softmax"))
model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=0.001))
model.summary()
# define the checkpoint
filepath = "weights-improvement-{epoch:02d}-{loss:.4f}.hdf5"
checkpoint = ModelCheckpoint(filepath, monitor="loss", verbose=1, save_best_only=True, mode="min")
callbacks_list = [checkpoint]
# fit the model
start = time.perf_counter()
history = model.fit(X, y, epochs=int(os.environ.get("PROGRAM_EPOCHS", 20)), batch_size=128,
                    callbacks=callbacks_list)
fit_seconds = time.perf_counter() - start

# load the best checkpoint (the last one written: each is better than the one before)
best = sorted(glob.glob("weights-improvement-*.hdf5"))[-1]
print("Loading", best)
model = load_model(best)
# pick a random seed
start = numpy.random.randint(0, len(dataX) - 1)
pattern = dataX[start]
print("Seed:")
print("\"", "".join([int_to_char[value] for value in pattern]), "\"")
# generate characters
for i in range(int(os.environ.get("PROGRAM_GENERATE_CHARS", 1000))):
    x = numpy.reshape(pattern, (1, len(pattern), 1))
    x = x / float(n_vocab)
    prediction = model.predict(x, verbose=0)
    index = numpy.argmax(prediction)
    result = int_to_char[index]
    sys.stdout.write(result)
    pattern.append(index)
    pattern = pattern[1:len(pattern)]
print("\nDone.")

print("PARAMS", model.count_params())
print("LOSS0", history.history["loss"][0])
print("LOSS", history.history["loss"][-1])
print("FIT_SECONDS", fit_seconds)
