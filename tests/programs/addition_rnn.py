"""Sequence to sequence learning for performing number addition: keras-io's
examples/nlp/addition_rnn.py (Keras 3 version; Smerity and others), written out again with the same
Keras API usage: an LSTM encoder, RepeatVector, an LSTM decoder and a softmax Dense learn "535+61" ->
"596" from one-hot characters; one fit(epochs=1) per iteration with validation_data, then ten
validation questions decoded after every iteration.

Sizes come from the environment, the example's values being the defaults: PROGRAM_TRAINING_SIZE
(50000), PROGRAM_EPOCHS (30: iterations 1..29, as the example's range(1, epochs)); PROGRAM_SEED
seeds the run (the example is unseeded). The last lines are machine-readable: PARAMS (parameter
count), LOSS0 (training loss of the first iteration), VAL_ACC (last validation accuracy),
FIT_SECONDS (wall time inside model.fit).
"""
import os
import time

import keras
import numpy as np
from keras import layers

if "PROGRAM_SEED" in os.environ:
    keras.utils.set_random_seed(int(os.environ["PROGRAM_SEED"]))

# Parameters for the model and dataset.
TRAINING_SIZE = int(os.environ.get("PROGRAM_TRAINING_SIZE", 50000))
DIGITS = 3
REVERSE = True

# Maximum length of input is 'int + int' (e.g., '345+678'). Maximum length of int is DIGITS.
MAXLEN = DIGITS + 1 + DIGITS


class CharacterTable:
    """Given a set of characters: encode them to a one-hot representation, decode a one-hot or
    integer representation, or a vector of probabilities, back to characters."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))
        self.char_indices = dict((c, i) for i, c in enumerate(self.chars))
        self.indices_char = dict((i, c) for i, c in enumerate(self.chars))

    def encode(self, C, num_rows):
        """One-hot encode string C into num_rows rows (so every sample has the same length)."""
        x = np.zeros((num_rows, len(self.chars)))
        for i, c in enumerate(C):
            x[i, self.char_indices[c]] = 1
        return x

    def decode(self, x, calc_argmax=True):
        """Decode probabilities or one-hot rows (or indices, with calc_argmax=False) to a string."""
        if calc_argmax:
            x = x.argmax(axis=-1)
        return "".join(self.indices_char[x] for x in x)


# All the numbers, plus sign and space for padding.
chars = "0123456789+ "
ctable = CharacterTable(chars)

questions = []
expected = []
seen = set()
print("Generating data...")
while len(questions) < TRAINING_SIZE:
    def f():
        return int("".join(np.random.choice(list("0123456789")) for i in range(np.random.randint(1, DIGITS + 1))))
    a, b = f(), f()
    # Skip any addition questions we've already seen, and any such that x+Y == Y+x (hence the sorting).
    key = tuple(sorted((a, b)))
    if key in seen:
        continue
    seen.add(key)
    # Pad the data with spaces such that it is always MAXLEN.
    q = "{}+{}".format(a, b)
    query = q + " " * (MAXLEN - len(q))
    ans = str(a + b)
    # Answers can be of maximum size DIGITS + 1.
    ans += " " * (DIGITS + 1 - len(ans))
    if REVERSE:
        # Reverse the query, e.g., '12+345  ' becomes '  543+21'.
        query = query[::-1]
    questions.append(query)
    expected.append(ans)
print("Total questions:", len(questions))

print("Vectorization...")
x = np.zeros((len(questions), MAXLEN, len(chars)), dtype=bool)
y = np.zeros((len(questions), DIGITS + 1, len(chars)), dtype=bool)
for i, sentence in enumerate(questions):
    x[i] = ctable.encode(sentence, MAXLEN)
for i, sentence in enumerate(expected):
    y[i] = ctable.encode(sentence, DIGITS + 1)

# Shuffle (x, y) in unison as the later parts of x will almost all be larger digits.
indices = np.arange(len(y))
np.random.shuffle(indices)
x = x[indices]
y = y[indices]

# Explicitly set apart 10% for validation data that we never train over.
split_at = len(x) - len(x) // 10
(x_train, x_val) = x[:split_at], x[split_at:]
(y_train, y_val) = y[:split_at], y[split_at:]

print("Training Data:")
print(x_train.shape)
print(y_train.shape)
print("Validation Data:")
print(x_val.shape)
print(y_val.shape)

print("Build model...")
num_layers = 1  # Try to add more LSTM layers!

model = keras.Sequential()
# "Encode" the input sequence using a LSTM, producing an output of size 128.
model.add(layers.Input((MAXLEN, len(chars))))
model.add(layers.LSTM(128))
# As the decoder RNN's input, repeatedly provide the last output of the encoder, DIGITS + 1 times
# (the longest answer: 999+999=1998).
model.add(layers.RepeatVector(DIGITS + 1))
# The decoder RNN could be multiple layers stacked or a single layer.
for _ in range(num_layers):
    # return_sequences=True: all the outputs so far, (num_samples, timesteps, output_dim).
    model.add(layers.LSTM(128, return_sequences=True))
# For each step of the output sequence, decide which character should be chosen.
model.add(layers.Dense(len(chars), activation="softmax"))
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.summary()

epochs = int(os.environ.get("PROGRAM_EPOCHS", 30))
batch_size = 32

fit_seconds = 0.0
losses = []
# Train the model each generation and show predictions against the validation dataset.
for epoch in range(1, epochs):
    print()
    print("Iteration", epoch)
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=1,
        validation_data=(x_val, y_val),
    )
    fit_seconds += time.perf_counter() - start
    losses.append(history.history["loss"][0])
    # Select 10 samples from the validation set at random so we can visualize errors.
    for i in range(10):
        ind = np.random.randint(0, len(x_val))
        rowx, rowy = x_val[np.array([ind])], y_val[np.array([ind])]
        preds = np.argmax(model.predict(rowx), axis=-1)
        q = ctable.decode(rowx[0])
        correct = ctable.decode(rowy[0])
        guess = ctable.decode(preds[0], calc_argmax=False)
        print("Q", q[::-1] if REVERSE else q, end=" ")
        print("T", correct, end=" ")
        if correct == guess:
            print("☑ " + guess)
        else:
            print("☒ " + guess)

print("PARAMS", model.count_params())
print("LOSS0", losses[0])
print("VAL_ACC", history.history["val_accuracy"][-1])
print("FIT_SECONDS", fit_seconds)
