"""The echo sequence prediction problem of the classic LSTM tutorials (Brownlee, "Long Short-Term
Memory Networks with Python", the vanilla LSTM chapter), the program lstmfast grew from: random
integer sequences one-hot encoded, a many-to-one LSTM(25) + Dense(softmax) learns to echo the value
at one index, trained one example at a time with fit(X, y, epochs=1, verbose=0) in a loop, then
evaluated on 100 new sequences and one printed example.

Sizes come from the environment, the tutorial's values being the defaults: PROGRAM_UPDATES (10000
single-example fits); PROGRAM_SEED seeds the run (the tutorial is unseeded). The tutorial's
print(model.summary()) and per-fit verbose=2 are kept quiet (verbose=0) so that 10,000 fits do not
print 10,000 lines. The last lines are machine-readable: PARAMS, LOSS0 (mean training loss over all
the single-example fits: the run is one pass over fresh data), ACC (accuracy on the 100 new
sequences, 0..1), FIT_SECONDS.
"""
import os
import time
from random import randint

from keras.layers import LSTM, Dense
from keras.models import Sequential
from keras.utils import set_random_seed
from numpy import argmax, array

if "PROGRAM_SEED" in os.environ:
    set_random_seed(int(os.environ["PROGRAM_SEED"]))


# generate a sequence of random integers
def generate_sequence(length, n_features):
    return [randint(0, n_features - 1) for _ in range(length)]


# one hot encode sequence
def one_hot_encode(sequence, n_features):
    encoding = list()
    for value in sequence:
        vector = [0 for _ in range(n_features)]
        vector[value] = 1
        encoding.append(vector)
    return array(encoding)


# decode a one hot encoded string
def one_hot_decode(encoded_seq):
    return [argmax(vector) for vector in encoded_seq]


# generate one example for an lstm
def generate_example(length, n_features, out_index):
    # generate sequence
    sequence = generate_sequence(length, n_features)
    # one hot encode
    encoded = one_hot_encode(sequence, n_features)
    # reshape sequence to be 3D
    X = encoded.reshape((1, length, n_features))
    # select output
    y = encoded[out_index].reshape(1, n_features)
    return X, y


# define model
length = 5
n_features = 10
out_index = 2
model = Sequential()
model.add(LSTM(25, input_shape=(length, n_features)))
model.add(Dense(n_features, activation="softmax"))
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["acc"])
model.summary()
# fit model
fit_seconds = 0.0
losses = []
for i in range(int(os.environ.get("PROGRAM_UPDATES", 10000))):
    X, y = generate_example(length, n_features, out_index)
    start = time.perf_counter()
    history = model.fit(X, y, epochs=1, verbose=0)
    fit_seconds += time.perf_counter() - start
    losses.append(history.history["loss"][0])
# evaluate model
correct = 0
for i in range(100):
    X, y = generate_example(length, n_features, out_index)
    yhat = model.predict(X, verbose=0)
    if one_hot_decode(yhat) == one_hot_decode(y):
        correct += 1
print("Accuracy: %f" % ((correct / 100) * 100.0))
# prediction on new data
X, y = generate_example(length, n_features, out_index)
yhat = model.predict(X, verbose=0)
print("Sequence:  %s" % [one_hot_decode(x) for x in X])
print("Expected:  %s" % one_hot_decode(y))
print("Predicted: %s" % one_hot_decode(yhat))

print("PARAMS", model.count_params())
print("LOSS0", sum(losses) / len(losses))
print("ACC", correct / 100)
print("FIT_SECONDS", fit_seconds)
