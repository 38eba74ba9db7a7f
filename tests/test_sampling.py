"""Token choice: temperature, top-k, top-p sampling and beam search on toy models with known
probabilities."""
import numpy as np
import pytest

from lstmfast.sampling import beam_search, sample_next


def test_temperature_zero_is_argmax():
    probs = np.array([0.1, 0.5, 0.4])
    assert all(sample_next(probs, temperature=0) == 1 for _ in range(5))


@pytest.mark.parametrize("temperature", [0.5, 2.0, 50.0])
def test_temperature_reshapes_the_distribution(temperature):
    rng = np.random.default_rng(0)
    probs = np.array([0.2, 0.45, 0.35])
    tempered = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
    freq = np.bincount([sample_next(probs, temperature=temperature, rng=rng) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(freq, tempered, atol=0.03)


def test_very_low_temperature_is_argmax():
    rng = np.random.default_rng(0)
    probs = np.array([0.2, 0.45, 0.35])
    assert {sample_next(probs, temperature=0.01, rng=rng) for _ in range(300)} == {1}


def test_temperature_one_matches_the_distribution():
    rng = np.random.default_rng(1)
    probs = np.array([0.7, 0.2, 0.1])
    freq = np.bincount([sample_next(probs, rng=rng) for _ in range(5000)], minlength=3) / 5000
    np.testing.assert_allclose(freq, probs, atol=0.03)


def test_top_k_never_leaves_the_k_best():
    rng = np.random.default_rng(2)
    probs = np.array([0.05, 0.3, 0.1, 0.25, 0.2, 0.1])
    draws = {sample_next(probs, top_k=3, rng=rng) for _ in range(2000)}
    assert draws == {1, 3, 4}


def test_top_p_keeps_the_smallest_nucleus():
    rng = np.random.default_rng(3)
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    draws = {sample_next(probs, top_p=0.75, rng=rng) for _ in range(2000)}
    assert draws == {0, 1}  # 0.5 < 0.75 <= 0.8
    assert {sample_next(probs, top_p=0.5, rng=rng) for _ in range(500)} == {0}


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
])
def test_bad_sampling_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(np.array([0.5, 0.5]), **kwargs)


# A toy decoder: tokens a=0, b=1, END=2. From the start: a 0.6, b 0.4. After a: a 0.35, b 0.35,
# END 0.3. After b: END 0.9, a 0.05, b 0.05. After two tokens: END 1.0.
# Greedy takes a then a or b (0.6*0.35 = 0.21, then END); the best sequence is b, END (0.36).
TABLE = {(): [0.6, 0.4, 0.0], (0,): [0.35, 0.35, 0.3], (1,): [0.05, 0.05, 0.9]}


def toy_step(tokens, state):
    (history,) = state                      # [K, 2]: the tokens so far (-1 = none), one row per beam
    out, new_hist = [], history.copy()
    for k, t in enumerate(tokens):
        row = new_hist[k]
        if t != 9:                          # 9 = the start symbol
            row[np.argmax(row == -1)] = t
        prefix = tuple(int(v) for v in row if v != -1)
        probs = TABLE.get(prefix, [0.0, 0.0, 1.0])
        with np.errstate(divide="ignore"):
            out.append(np.log(np.asarray(probs)))
    return np.array(out), [new_hist]


def greedy(step, state, start, max_length, end):
    tokens, seq, score = np.array([start]), [], 0.0
    for _ in range(max_length):
        logp, state = step(tokens, state)
        t = int(np.argmax(logp[0]))
        score += logp[0, t]
        seq.append(t)
        if t == end:
            break
        tokens = np.array([t])
    return seq, score


def test_beam_search_finds_the_best_sequence_greedy_misses():
    state = [np.full((1, 3), -1)]
    g_seq, g_score = greedy(toy_step, state, 9, 4, 2)
    b_seq, b_score = beam_search(toy_step, state, [9], beam_width=2, max_length=4, end_token=2)
    assert b_seq == [1, 2] and b_score == pytest.approx(np.log(0.4 * 0.9))
    assert g_seq[0] == 0 and g_score < b_score


def test_beam_width_one_is_greedy():
    state = [np.full((1, 3), -1)]
    seq, score = beam_search(toy_step, state, [9], beam_width=1, max_length=4, end_token=2)
    g_seq, g_score = greedy(toy_step, state, 9, 4, 2)
    assert seq == g_seq and score == pytest.approx(g_score)


def test_beam_search_without_end_token_stops_at_max_length():
    def step(tokens, state):
        return np.log(np.tile([0.7, 0.3], (len(tokens), 1))), state
    seq, score = beam_search(step, [np.zeros((1, 1))], [0], beam_width=3, max_length=5)
    assert seq == [0] * 5 and score == pytest.approx(5 * np.log(0.7))


def test_beam_search_argument_errors():
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(toy_step, [np.full((1, 3), -1)], [9], 0, 3)
    with pytest.raises(ValueError, match="start_tokens"):
        beam_search(toy_step, [np.full((1, 3), -1)], [9, 9], 2, 3)
