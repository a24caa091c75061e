"""The improved baseline search (issue 19): successive halving, the budget, evolution, the pick.

Training is replaced by fake trainers whose scores are known functions of the architecture
(and of the seed, for the pick), so each test knows the right answer from first principles.
The space's base is the tiny two-stage spec of test_nas (10 parameters instead of 35).
"""

from __future__ import annotations

import math
import random

import optuna
import pytest

from effnet.errors import EffnetError, ParameterError
from effnet.nas.compare import rung_taus, seed_spread
from effnet.nas.evolution import RegularizedEvolutionSampler, fitness, mutate
from effnet.nas.pick import pick_rows, pick_seeds, picked, run_pick, top_trials
from effnet.nas.search import NasConfig, run_nas
from effnet.nas.space import SearchSpace
from effnet.spec import spec_from_dict
from tests.test_nas import TINY, StubData


def score_of(spec) -> float:
    """A made-up accuracy in (0.2, 0.8): bigger kernels, wider and deeper stages are better."""
    s = sum(st.kernel + st.out_channels / 8 + st.repeats for st in spec.stages)
    return 0.2 + 0.6 * (1 - math.exp(-s / 30))


def curve_trainer(model, resolution, data, recipe, seed, on_epoch=None):
    """Reports every evaluation of the recipe: score x k / E (so ranks never change)."""
    evals = recipe.evals or recipe.epochs
    score = score_of(model.spec)
    for k in range(1, evals + 1):
        if on_epoch is not None:
            on_epoch(k, score * k / evals)
    return {"val_top1": score}


def base_worst_trainer(model, resolution, data, recipe, seed, on_epoch=None):
    """Like curve_trainer, but the base (TINY's stages) is the worst architecture there is."""
    if model.spec.stages == CFG.proxy.spec(TINY).stages:
        evals = recipe.evals or recipe.epochs
        for k in range(1, evals + 1):
            if on_epoch is not None:
                on_epoch(k, 0.01 * k / evals)
        return {"val_top1": 0.01}
    return curve_trainer(model, resolution, data, recipe, seed, on_epoch)


CFG = NasConfig(space=SearchSpace(base=TINY))


def search(tmp_path, trainer, budget, **kw):
    cfg = NasConfig(space=SearchSpace(base=TINY), **kw)
    res = run_nas(cfg, 200, f"sqlite:///{tmp_path / 'n.db'}", trainer=trainer, data=StubData(),
                  progress=False, budget=budget)
    return cfg, res


# ---------------------------------------------------------------- successive halving
def test_successive_halving_promotes_the_best_third_at_each_rung_and_keeps_the_budget(tmp_path):
    cfg, res = search(tmp_path, curve_trainer, budget=6, sampler="random")
    assert cfg.rungs() == [2]  # 6 evaluations, first rung 2, eta 3: judged at 2, ends at 6
    rows = sorted(res.rows, key=lambda r: r["trial"])
    seen: list[float] = []
    for r in rows:  # one worker: trials reach the rung in order of number
        rung_value = r["curve"][1] * 1.0
        reward_at_rung = rung_value * (r["macs"] / res.target_macs) ** cfg.w
        competing = sorted([*seen, reward_at_rung], reverse=True)
        idx = max(0, len(competing) // cfg.eta - 1)   # Optuna's ASHA: the best 1/eta
        promoted = reward_at_rung >= competing[idx]
        seen.append(reward_at_rung)
        assert r["status"] == ("complete" if promoted else "pruned"), r["trial"]
        assert len(r["curve"]) == (cfg.evals if promoted else cfg.rungs()[0])
        assert r["trainings"] == (1.0 if promoted else 2 / 6)
    # The budget: the trials stand for at least 6 trainings, and the last one started below it.
    spent = sum(r["trainings"] for r in rows)
    assert 6 <= spent < 7
    assert spent - rows[-1]["trainings"] < 6
    assert res.trainings()["search"] == pytest.approx(spent)


def test_b0_gets_no_pass(tmp_path):
    # The base is the worst architecture at every evaluation: judged against the eta random
    # trials before it, it is stopped at the first rung (trial 0 of the old search always ran).
    cfg, res = search(tmp_path, base_worst_trainer, budget=3)
    base = next(r for r in res.rows if r["baseline"])
    assert base["trial"] == cfg.eta
    assert base["status"] == "pruned" and len(base["curve"]) == cfg.first_rung


def test_a_search_without_pruning_trains_every_trial_to_the_end(tmp_path):
    cfg = NasConfig(space=SearchSpace(base=TINY), sampler="random")
    res = run_nas(cfg, 50, f"sqlite:///{tmp_path / 'n.db'}", trainer=curve_trainer,
                  data=StubData(), progress=False, prune=False, budget=5)
    assert len(res.rows) == 5 and all(r["status"] == "complete" for r in res.rows)


# ---------------------------------------------------------------- regularized evolution
def _toy_study(sampler, n: int, target: dict) -> optuna.Study:
    """A study over 6 categorical parameters of 4 options; score = parameters equal to target."""
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        return sum(trial.suggest_categorical(k, [0, 1, 2, 3]) == v for k, v in target.items())

    study.optimize(objective, n_trials=n)
    return study


def test_evolution_climbs_where_random_search_only_draws():
    # 6 parameters of 4 options, score = how many equal the target: one optimum in 4,096
    # points, and every step towards it is one mutation. A random draw scores >= 5 with
    # probability 19/4096, so 100 random draws miss 5 more often than not; evolution climbs.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evo, rnd = [], []
    for seed in range(6):
        target = {f"p{i}": (i * 7 + seed) % 4 for i in range(6)}
        study = _toy_study(RegularizedEvolutionSampler(population=8, sample_size=3, seed=seed),
                           100, target)
        # the first `population` trials are the random initial population
        assert len({tuple(t.params.values()) for t in study.trials[:8]}) == 8
        evo.append(study.best_value)
        rnd.append(_toy_study(optuna.samplers.RandomSampler(seed=seed), 100, target).best_value)
    assert min(evo) >= 5 and max(evo) == 6
    assert sum(evo) > sum(rnd)


def test_mutation_changes_exactly_one_parameter_to_another_option():
    space = {k: optuna.distributions.CategoricalDistribution([3, 5]) for k in ("a", "b")}
    space["c"] = optuna.distributions.CategoricalDistribution([1])  # nothing to change
    rng = random.Random(0)
    for _ in range(50):
        parent = {"a": rng.choice([3, 5]), "b": rng.choice([3, 5]), "c": 1}
        child = mutate(parent, space, rng)
        changed = [k for k in parent if child[k] != parent[k]]
        assert len(changed) == 1 and changed[0] in ("a", "b")


def test_fitness_ranks_by_rung_reached_then_score():
    from optuna.trial import TrialState, create_trial

    dist = {"a": optuna.distributions.CategoricalDistribution([0, 1])}
    early_high = create_trial(state=TrialState.PRUNED, params={"a": 0}, distributions=dist,
                              intermediate_values={1: 0.9, 2: 0.95})
    late_low = create_trial(state=TrialState.PRUNED, params={"a": 1}, distributions=dist,
                            intermediate_values={1: 0.2, 2: 0.3, 3: 0.4, 4: 0.5})
    done = create_trial(state=TrialState.COMPLETE, value=0.1, params={"a": 1},
                        distributions=dist,
                        intermediate_values={k: 0.1 for k in range(1, 7)})
    assert fitness(done) > fitness(late_low) > fitness(early_high)


# ---------------------------------------------------------------- seeds before the pick
def test_pick_seeds_are_distinct_and_never_the_searchs_own():
    for s in range(5):
        seeds = pick_seeds(s, 4)
        assert len(set(seeds)) == 4 and s not in seeds
    assert not set(pick_seeds(0, 3)) & set(pick_seeds(1, 3))


def test_the_pick_is_the_best_mean_not_the_best_single_run():
    rows = [{"trial": i, "status": "complete", "reward": r, "macs": 100, "accuracy": r,
             "spec": {}} for i, r in enumerate([0.90, 0.80, 0.85, 0.70])]
    top = top_trials(rows, 3)
    assert [r["trial"] for r in top] == [0, 2, 1]
    seeds = [7, 8, 9]
    accs = {0: [0.70, 0.72, 0.71], 2: [0.80, 0.79, 0.81], 1: [0.75, 0.75, 0.75]}
    results = {f"t{t}-s{s}": {"val_top1": a} for t, v in accs.items()
               for s, a in zip(seeds, v, strict=True)}
    prows = pick_rows(top, results, seeds, target=100, w=-0.07)
    assert picked(prows)["trial"] == 2
    assert picked(prows)["mean_accuracy"] == pytest.approx(0.80)
    del results["t1-s9"]  # a missing seed: no pick yet
    assert picked(pick_rows(top, results, seeds, target=100, w=-0.07)) is None


def test_run_pick_retrains_the_top_k_with_new_seeds_and_picks_by_the_mean(tmp_path):
    calls: list[tuple[str, int]] = []

    def lucky_trainer(model, resolution, data, recipe, seed, on_epoch=None):
        """At the search's seed (0) the score is score_of(spec); at any other seed it is
        0.9 - score_of(spec): the best single runs are the worst on average."""
        key = str(model.spec.stages)
        calls.append((key, seed))
        s = score_of(model.spec)
        return curve_trainer(model, resolution, data, recipe, seed, on_epoch) if seed == 0 \
            else {"val_top1": 0.9 - s}

    cfg = NasConfig(space=SearchSpace(base=TINY), sampler="random", top_k=2, pick_seeds=3,
                    w=0.0)
    db = f"sqlite:///{tmp_path / 'n.db'}"
    res = run_nas(cfg, 6, db, trainer=lucky_trainer, data=StubData(), progress=False,
                  prune=False)
    n_search = len(calls)
    picks = run_pick(cfg, res.rows, db, "effnet-nas", res.target_macs, lucky_trainer,
                     StubData())
    retrain = calls[n_search:]
    assert len(retrain) == 6 and all(seed != 0 for _, seed in retrain)
    assert {seed for _, seed in retrain} == set(pick_seeds(0, 3))
    top = top_trials(res.rows, 2)
    worst_of_top = min(top, key=lambda r: r["accuracy"])
    assert picked(picks)["trial"] == worst_of_top["trial"]
    again = run_pick(cfg, res.rows, db, "effnet-nas", res.target_macs, lucky_trainer,
                     StubData())
    assert len(calls) == n_search + 6 and again == picks  # resumed: nothing retrained
    from effnet.nas.search import load_result

    stored = load_result(cfg, db, data=StubData())
    assert stored.best["trial"] == worst_of_top["trial"]
    assert spec_from_dict(stored.best["spec"]).stages
    assert stored.trainings() == {"trials": 6, "search": 6.0, "pick": 6.0}


# ---------------------------------------------------------------- the report's statistics
def test_seed_spread_on_hand_computed_scores():
    sp = seed_spread({"a": [1.0, 3.0], "b": [5.0, 7.0], "lone": [4.0]})
    assert sp["architectures"] == 2
    assert sp["seed_sd"] == pytest.approx(math.sqrt(2))      # variances 2 and 2
    assert sp["between_sd"] == pytest.approx(math.sqrt(8))   # means 2 and 6
    assert sp["between_sd_true"] == pytest.approx(math.sqrt(8 - 2 / 2))
    assert seed_spread({"a": [1.0, 2.0]})["seed_sd"] is None


def test_rung_taus_agree_and_disagree_as_built():
    curves = {"x": [0.1, 0.5, 0.9], "y": [0.2, 0.4, 0.8], "z": [0.3, 0.3, 0.7], "short": [0.1]}
    # evaluation 1 ranks x < y < z, the final x > y > z: tau -1; evaluation 2 agrees: +1
    assert rung_taus(curves) == [pytest.approx(-1.0), pytest.approx(1.0)]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,param", [({"sampler": "grid"}, "sampler"), ({"eta": 1}, "eta"),
                                      ({"first_rung": 6}, "first_rung"),
                                      ({"top_k": -1}, "top_k"), ({"pick_seeds": 0},
                                                                 "pick_seeds"),
                                      ({"startup": 1}, "startup")])
def test_bad_settings_name_their_parameter(kw, param):
    with pytest.raises(ParameterError) as err:
        NasConfig(**kw)
    assert param in err.value.params


def test_a_budget_must_be_positive(tmp_path):
    with pytest.raises(EffnetError, match="budget"):
        run_nas(CFG, 5, f"sqlite:///{tmp_path / 'n.db'}", trainer=curve_trainer,
                data=StubData(), progress=False, budget=0)
