"""Character-level text generation with LSTM: keras-io's
examples/generative/lstm_character_level_text_generation.py (Keras 3 version; fchollet), written out
again with the same Keras API usage: the corpus from keras.utils.get_file, semi-redundant 40-character
windows one-hot encoded, keras.Input -> LSTM(128) -> Dense(softmax), RMSprop(learning_rate=0.01),
one fit(epochs=1) per epoch, then text sampled at four temperatures ("diversities") with
np.random.multinomial.

Sizes come from the environment, the example's values being the defaults: PROGRAM_CORPUS_URL (the
Nietzsche corpus's URL; the tests give a file:// URL of tiny-shakespeare), PROGRAM_CORPUS_CHARS (the
whole corpus: the first N characters are kept), PROGRAM_EPOCHS (40), PROGRAM_GENERATE_CHARS (400 per
temperature); PROGRAM_SEED seeds the run (the example is unseeded). The last lines are
machine-readable: PARAMS, LOSS0 (first-epoch training loss), LOSS (last epoch's), FIT_SECONDS.
"""
import io
import os
import random
import time

import keras
import numpy as np
from keras import layers

if "PROGRAM_SEED" in os.environ:
    keras.utils.set_random_seed(int(os.environ["PROGRAM_SEED"]))

path = keras.utils.get_file(
    "nietzsche.txt",
    origin=os.environ.get("PROGRAM_CORPUS_URL", "https://s3.amazonaws.com/text-datasets/nietzsche.txt"),
)
with io.open(path, encoding="utf-8") as f:
    text = f.read().lower()
text = text.replace("\n", " ")  # We remove newlines chars for nicer display
if "PROGRAM_CORPUS_CHARS" in os.environ:
    text = text[: int(os.environ["PROGRAM_CORPUS_CHARS"])]
print("Corpus length:", len(text))

chars = sorted(list(set(text)))
print("Total chars:", len(chars))
char_indices = dict((c, i) for i, c in enumerate(chars))
indices_char = dict((i, c) for i, c in enumerate(chars))

# cut the text in semi-redundant sequences of maxlen characters
maxlen = 40
step = 3
sentences = []
next_chars = []
for i in range(0, len(text) - maxlen, step):
    sentences.append(text[i : i + maxlen])
    next_chars.append(text[i + maxlen])
print("Number of sequences:", len(sentences))

x = np.zeros((len(sentences), maxlen, len(chars)), dtype="bool")
y = np.zeros((len(sentences), len(chars)), dtype="bool")
for i, sentence in enumerate(sentences):
    for t, char in enumerate(sentence):
        x[i, t, char_indices[char]] = 1
    y[i, char_indices[next_chars[i]]] = 1

model = keras.Sequential(
    [
        keras.Input(shape=(maxlen, len(chars))),
        layers.LSTM(128),
        layers.Dense(len(chars), activation="softmax"),
    ]
)
optimizer = keras.optimizers.RMSprop(learning_rate=0.01)
model.compile(loss="categorical_crossentropy", optimizer=optimizer)


def sample(preds, temperature=1.0):
    # helper function to sample an index from a probability array
    preds = np.asarray(preds).astype("float64")
    preds = np.log(preds) / temperature
    exp_preds = np.exp(preds)
    preds = exp_preds / np.sum(exp_preds)
    probas = np.random.multinomial(1, preds, 1)
    return np.argmax(probas)


epochs = int(os.environ.get("PROGRAM_EPOCHS", 40))
batch_size = 128
generate_chars = int(os.environ.get("PROGRAM_GENERATE_CHARS", 400))

fit_seconds = 0.0
losses = []
for epoch in range(epochs):
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch_size, epochs=1)
    fit_seconds += time.perf_counter() - start
    losses.append(history.history["loss"][0])
    print()
    print("Generating text after epoch: %d" % epoch)

    start_index = random.randint(0, len(text) - maxlen - 1)
    for diversity in [0.2, 0.5, 1.0, 1.2]:
        print("...Diversity:", diversity)

        generated = ""
        sentence = text[start_index : start_index + maxlen]
        print('...Generating with seed: "' + sentence + '"')

        for i in range(generate_chars):
            x_pred = np.zeros((1, maxlen, len(chars)))
            for t, char in enumerate(sentence):
                x_pred[0, t, char_indices[char]] = 1.0
            preds = model.predict(x_pred, verbose=0)[0]
            next_index = sample(preds, diversity)
            next_char = indices_char[next_index]
            sentence = sentence[1:] + next_char
            generated += next_char

        print("...Generated: ", generated)
        print("-")

print("PARAMS", model.count_params())
print("LOSS0", losses[0])
print("LOSS", losses[-1])
print("FIT_SECONDS", fit_seconds)
