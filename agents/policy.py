"""The offline Designer's choices: a parent from the Pareto front and a move by a bandit.

* :func:`choose_parent` - the front member the critique asks for (over budget: the
  cheapest feasible one; lagging groups: the fairest; else the best score), or with
  probability :data:`EXPLORE_PARENT` another front member.
* :func:`rank_moves` - Thompson sampling over the named moves on the score effect in
  units of ``noise_sd``: a Gaussian posterior per move whose prior is the move's measured
  effect on the Template (:mod:`agents.move_prior`) where one was measured, else
  optimistic (:data:`PRIOR_MEAN`), and a bonus on the draw for the moves the critique
  plans (first planned move most); a failure counts as :data:`FAILURE_REWARD`. Moves that
  failed twice with no success are dropped. Sampling keeps every move a chance, so the
  policy explores.

Both draw only from the generator they are given (deterministic per search seed).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from agents.move_prior import PRIOR_WEIGHT_PER_SEED, MovePrior
from agents.move_stats import MoveStat
from agents.records import Candidate, estimate, estimated_objectives
from evaluation.pareto import Cost, objectives
from tasks.mutations import MUTATIONS

#: Probability of drawing another front member than the one the critique asks for.
EXPLORE_PARENT = 0.25
#: Prior mean of a move's score effect, in units of noise_sd (optimistic: untried moves
#: look like a one-noise-sd gain until measured), and its weight in pseudo-observations.
PRIOR_MEAN, PRIOR_WEIGHT = 0.5, 2.0
#: Bonus added to the draw of the critique's first planned move; later ones get
#: ``PLAN_BONUS * (1 - rank / len(plan)) ** 2``. A fairness plan's bonus wears down with
#: evidence; a budget plan's moves come first outright (:func:`rank_moves`).
PLAN_BONUS = 2.0
#: Reward of a failed or collapsed try, in units of noise_sd.
FAILURE_REWARD = -3.0
#: Rewards are clipped to +-this many noise_sd so one outlier cannot dominate a mean.
REWARD_CLIP = 4.0
#: Spread of one observation, in units of noise_sd (effects vary by more than the noise).
OBS_SD = 1.0
#: A move with this many failures and no success is not proposed again.
MAX_FAILURES = 2
#: Budget name -> the cost a parent is chosen on, for the rationale.
COST_LABEL = {"latency": "latency", "memory": "memory", "params": "parameters",
              "flops": "FLOPs"}


#: What the critique's planned moves answer (:func:`rank_moves`).
PlanKind = Literal["budget", "fairness"]


@dataclass(frozen=True)
class ParentChoice:
    """The parent a design starts from and why."""

    id: str
    reason: str


def _cost(rec: Candidate, budget: str) -> float:
    """Return the cost a violated budget is about (latency by default)."""
    assert rec.report is not None
    cost = cast(Cost, budget if budget in COST_LABEL else "latency")
    return objectives(rec.report, cost=cost)[2]


def choose_parent(front: Sequence[str], candidates: Mapping[str, Candidate],
                  focus: str, budget: str, unfairness_weight: float,
                  rng: random.Random) -> ParentChoice | None:
    """Pick the parent of the next design among the evaluated Pareto-front members.

    Args:
        front: Ids of the Pareto archive (the best design may be added by the caller).
        candidates: The run's records by id.
        focus: ``budget`` (cheapest feasible), ``fairness`` (fairest) or ``accuracy``
            (best selection score).
        budget: The first violated budget's name when ``focus`` is ``budget``.
        unfairness_weight: The selection score's weight.
        rng: Seeded generator.

    Returns:
        The choice, or None when no front member was evaluated successfully.
    """
    members = [candidates[c] for c in dict.fromkeys(front)
               if c in candidates and candidates[c].ok]
    if not members:
        return None

    def infeasible(rec: Candidate) -> int:
        assert rec.report is not None
        return len(rec.report.violations)

    if focus == "budget":
        target = min(members, key=lambda r: (infeasible(r), _cost(r, budget)))
        reason = f"the cheapest feasible front member ({COST_LABEL.get(budget, budget)})"
    elif focus == "fairness":
        target = min(members, key=lambda r: (infeasible(r) > 0, estimated_objectives(r)[1]))
        reason = "the fairest front member (lowest mean max_gap)"
    else:
        target = min(members, key=lambda r: (infeasible(r) > 0,
                                             -estimate(r, unfairness_weight)))
        reason = "the front member with the best selection score"
    others = [r for r in members if r.id != target.id]
    if others and rng.random() < EXPLORE_PARENT:
        pick = rng.choice(others)
        return ParentChoice(pick.id, f"another front member, drawn to explore (the critique "
                                     f"asked for {target.id}, {reason})")
    return ParentChoice(target.id, reason)


def banned(stat: MoveStat | None) -> bool:
    """Tell whether a move failed :data:`MAX_FAILURES` times with no success."""
    return stat is not None and stat.failures >= MAX_FAILURES and stat.successes == 0


def _clip(reward: float) -> float:
    return max(-REWARD_CLIP, min(REWARD_CLIP, reward))


def prior_of(measured: MovePrior | None, noise_sd: float) -> tuple[float, float]:
    """Prior (mean in units of ``noise_sd``, weight in observations) of one move.

    A measured move starts from its paired effect on the Template, worth
    :data:`agents.move_prior.PRIOR_WEIGHT_PER_SEED` observations per measured seed; an
    unmeasured one from the optimistic :data:`PRIOR_MEAN` at :data:`PRIOR_WEIGHT`.
    """
    if measured is None:
        return PRIOR_MEAN, PRIOR_WEIGHT
    return _clip(measured.score / noise_sd), PRIOR_WEIGHT_PER_SEED * measured.seeds


def posterior(stat: MoveStat | None, prior_mean: float, noise_sd: float,
              prior_weight: float = PRIOR_WEIGHT) -> tuple[float, float]:
    """Gaussian posterior (mean, sd) of a move's score effect in units of ``noise_sd``."""
    rewards: list[float] = []
    if stat is not None:
        rewards = [_clip(e / noise_sd) for e in stat.effects["score"]]
        rewards += [FAILURE_REWARD] * stat.failures
    weight = prior_weight + len(rewards)
    mean = (prior_mean * prior_weight + sum(rewards)) / weight
    return mean, OBS_SD / weight ** 0.5


def rank_moves(stats: Mapping[str, MoveStat], planned: Sequence[str], noise_sd: float,
               rng: random.Random, prior: Mapping[str, MovePrior] | None = None,
               plan: PlanKind = "budget") -> list[str]:
    """Order the moves by one Thompson draw each (highest first); banned moves are left out.

    Args:
        stats: Per-move statistics of the run (:func:`agents.move_stats.move_stats`).
        planned: The critique's moves, most urgent first (:func:`heuristic.plan_moves`).
        noise_sd: Std of the selection score over training seeds (> 0).
        rng: Seeded generator.
        prior: Measured effects on the Template by move (:func:`agents.move_prior.load_prior`;
            None or missing moves: the optimistic flat prior).
        plan: What the planned moves answer. ``budget`` (a violated budget): the planned
            moves come first, in the order of their draws, because the score they are
            measured on does not see cost and no other move makes the design feasible;
            the others follow. ``fairness`` (lagging groups): every move competes, and a
            planned move's bonus wears down as evidence about it grows (scaled by
            ``PRIOR_WEIGHT / (PRIOR_WEIGHT + n)``, ``n`` its measured prior's
            pseudo-observations plus its tries), since the score counts unfairness: an
            untried move under the flat prior gets the whole bonus, a measured one
            competes on its measurements.

    Returns:
        Every allowed move name, best draw first; all moves if every one is banned.
    """
    rank = {m: i for i, m in enumerate(planned)}
    prior = prior or {}
    draws = []
    for move in sorted(MUTATIONS):
        stat = stats.get(move)
        mean0, weight0 = prior_of(prior.get(move), noise_sd)
        mean, sd = posterior(stat, mean0, noise_sd, weight0)
        bonus = PLAN_BONUS * (1 - rank[move] / len(planned)) ** 2 if move in rank else 0.0
        if plan == "fairness":
            measured = (weight0 if move in prior else 0.0) + (stat.tries if stat else 0)
            bonus *= PRIOR_WEIGHT / (PRIOR_WEIGHT + measured)
        first = plan == "budget" and move in rank
        draws.append((first, rng.gauss(mean, sd) + bonus, move, banned(stat)))
    allowed = [d for d in draws if not d[3]] or draws
    return [d[2] for d in sorted(allowed, key=lambda d: (not d[0], -d[1]))]


def evidence(stat: MoveStat | None, noise_sd: float, measured: MovePrior | None = None) -> str:
    """One phrase of evidence for a move, for the rationale."""
    if stat is None or stat.tries == 0:
        if measured is not None:
            return (f"untried in this run; on the Template it changed the score by "
                    f"{measured.score:+.3f} (balanced accuracy {measured.balanced_accuracy:+.3f}, "
                    f"{measured.seeds} paired seeds, agents/move_prior.json)")
        return "untried (optimistic prior)"
    mean = stat.mean("score")
    effect = (f"mean score effect {mean:+.3f} ({mean / noise_sd:+.1f} noise sd)"
              if mean is not None else "no effect measured at equal fidelity")
    return (f"{stat.tries} tries, {stat.failures} failed, {stat.helped} helped / "
            f"{stat.neutral} neutral / {stat.hurt} hurt, {effect}")
