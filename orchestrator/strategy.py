"""The default search strategy (`search.sampler = "front"`): the ends of each range first, then
a model, one defense family at a time, going past a range's end when the front reaches it.

Why this shape (BENCHMARKS.md, "Choosing the sampler"): on MNIST-1D the paper's hand grid beat
TPE over the whole conditional space because a grid holds its range's ends, and the strongest
defenses sat at the top of ω's range. So:

1. **Start design.** Each family's preset start point (the middle of its lattice for a
   finite family without one), then the corners of each continuous family's box (on the scale
   each knob is searched on), in a seeded order.
2. **Finite families are enumerated, not sampled.** A family whose knobs are all integers (the
   stingy teacher's k: at most classes − 1 values, and no teacher to train) takes its turn
   while one of its points that carry the front (2 % of its hypervolume, see `MATERIAL`) has an
   untried neighbour (one step in one knob): a local search that stops where its points stop
   mattering. Families take turns after the start design, the one with the fewest trials past
   it first.
3. **A model on each continuous family alone** (`_Surrogate`): each objective from a plane
   fitted locally to that family's finished trials only, so that no knob of another family
   blurs it, moved in its better direction by its slope times the distance to the nearest
   trial (finished or in flight, so two in flight are not sent to one spot). The next point
   is the lattice point (5 per knob, then 9, then 17) whose optimistic outcome adds most to
   the front's hypervolume. A family with fewer than `_MODEL_AFTER` finished trials draws at
   random instead.
4. **Range extension.** When a point of the front lies at the end of a continuous knob's range
   searched so far (`KnobRange.end_of`) and carries a real share of the front's hypervolume
   (2 %: not a teacher as good as the normal one, at the weak end), and the family has had two
   trials inside the box (a start-design corner is on the front at first only for being a
   corner), that end moves out by a quarter of the preset range's width, up to the knob's hard
   bounds, and the family's model searches the wider box. Extensions stick: the range searched
   is every range a trial was asked within (`searched_ranges`), widened again where the front
   sits at its end, so a restored sweep finds the same one; `searched_space` gives it to the
   space function (`search_spaces.suggest_candidate`), and the sweep's record keeps it.

5. **Focus on teachers worth shipping.** Its hypervolume (what carries, what the model hopes
   to add) is bounded below at the normal teacher's accuracy less `search.focus_teacher_drop`
   (15 points unless the preset says otherwise; `--max-teacher-drop` when tighter). The
   sweep's report bounds it at teacher accuracy 0, where a teacher that lost most of its
   accuracy, and whose clones learn little for that reason, counts as a strong defense: left
   to that, range extension walked ω out to teachers of 9-64 % (BENCHMARKS.md). A teacher below
   the floor still runs, is stored and is on the sweep's front if nothing beats it; it just
   neither widens a range nor draws the model towards it. Past the preset's range, where a
   step landed on such teachers, the model's box ends halfway back towards the farthest
   teacher still within the focus (`_short_of_collapse`): the search bisects towards the edge
   of collapse instead of walking the collapsed end again.

Everything the strategy decides comes from the study's trials, so it is an ordinary Optuna
sampler: asked and told in the driver, persisted wherever the study lives, resumable, and its
trials are visible in optuna-dashboard like any other sampler's.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from undistill.space import DefenseSpace, SearchSpace

EXTEND_BY = 0.25  # of a range's width, each time the front reaches its end
# a front point steers the search (a range's end moves past it, a finite family steps around
# it) only if it alone holds this share of the front's hypervolume
MATERIAL = 0.02
MAX_EXTENSIONS = 8  # steps at once, when several carrying points lie past one another
EXTEND_AFTER = 2  # a family's finished trials past the start design before its ranges may widen
_MODEL_AFTER = 3  # a family's finished trials before its model takes over from random draws
BANDWIDTH = 0.35  # of the unit box: how local the surrogate's plane is
RIDGE = 1e-3
LATTICES = (5, 9, 17)  # points per knob of the grids the model chooses from (ends included), coarse first


def searched_ranges(space: SearchSpace, trials: Sequence[FrozenTrial]) -> SearchSpace:
    """The ranges a study's trials were drawn from: each knob's preset range widened to every
    range a trial was asked within (a sampler that extends ranges asks within wider ones)."""
    families = []
    for family in space:
        ranges = []
        for r in family.ranges:
            for t in trials:
                d = t.distributions.get(r.name)
                if t.params.get("defense") == family.defense and isinstance(d, (FloatDistribution, IntDistribution)):
                    r = replace(r, low=min(r.low, d.low), high=max(r.high, d.high))
            ranges.append(r)
        families.append(replace(family, ranges=tuple(ranges)))
    return replace(space, defenses=tuple(families))


def candidate_key(params: dict) -> tuple:
    """What makes two candidates the same: the defense and its knobs (floats to 9 digits)."""
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


class FrontSampler(BaseSampler):
    """See the module's docstring. `space`: the preset's; `start`: its start points."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, start: Sequence[dict] = (), extend: bool = True,
                 reference: Sequence[float | None] = (0.0, None)):
        """`reference`: the hypervolume's reference point, per objective (None: a hair past the
        worst value seen); the default is the sweep's report's, teacher accuracy 0; a sweep's
        is its focus floor (see the module's docstring, 5)."""
        self._reference_point = tuple(reference)
        self._space = space
        self._seed = seed
        self._start = [dict(p) for p in start]
        self._extend = extend
        self._plans: dict[int, dict] = {}  # trial number -> the candidate chosen for it

    # -- Optuna's sampler interface: every value comes from the trial's plan ------------------

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution):
        plan = self.plan(study, trial)
        if param_name in plan and _contains(param_distribution, plan[param_name]):
            return plan[param_name]
        # a parameter the plan does not hold (a space function of the user's own): draw it
        return RandomSampler(seed=self._trial_seed(trial)).sample_independent(
            study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self._plans.pop(trial.number, None)

    # -- what the space function and the sweep's record read ----------------------------------

    def searched_space(self, study: Study, trial: FrozenTrial | None = None) -> SearchSpace:
        """The ranges searched so far: the preset's, widened where the front reached an end (and
        wide enough for `trial`'s planned candidate)."""
        space = self._widened(study)
        if trial is None:
            return space
        plan = self.plan(study, trial)
        family = space.get(plan["defense"])
        ranges = tuple(replace(r, low=min(r.low, plan[r.name]), high=max(r.high, plan[r.name]))
                       if r.name in plan else r for r in family.ranges)
        return replace(space, defenses=tuple(replace(d, ranges=ranges) if d is family else d for d in space))

    def plan(self, study: Study, trial: FrozenTrial) -> dict:
        """The candidate for `trial`, decided once, when its first parameter is asked for."""
        if trial.number not in self._plans:
            self._plans[trial.number] = self._choose(study, trial)
        return self._plans[trial.number]

    # -- the strategy -------------------------------------------------------------------------

    def _choose(self, study: Study, trial: FrozenTrial) -> dict:
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        taken = {candidate_key(t.params) for t in trials if _counts(t)}
        # a candidate that failed twice (an error, not a killed driver) is not asked for again
        failed = Counter(candidate_key(t.params) for t in trials if t.state == TrialState.FAIL and t.params)
        taken |= {key for key, n in failed.items() if n >= 2}
        # a trial asked for but not yet given its parameters (the plan of another in flight)
        taken |= {candidate_key(p) for n, p in self._plans.items() if n != trial.number}
        for point in self._start_design():
            if candidate_key(point) not in taken:
                return point
        space = self._widened(study)
        front = self._carrying(study, trials)
        # the families take turns: each continuous one (its model's proposal), and each finite
        # one while a point of it on the front has an untried neighbour
        steps = {}
        for family in space:
            if _is_finite(family):
                step = _untried_neighbour(family, front, taken)
                if step is not None:
                    steps[family.defense] = step
            else:
                steps[family.defense] = None  # asked of the model below, once chosen
        if steps:
            design = {candidate_key(p) for p in self._start_design()}
            names = list(space.names)

            def turns(name: str) -> tuple[int, int]:  # trials past the start design, then preset order
                return (sum(t.params.get("defense") == name and candidate_key(t.params) not in design
                            for t in trials if _counts(t)), names.index(name))

            chosen = min(steps, key=turns)
            if steps[chosen] is not None:
                return steps[chosen]
            return self._model_proposal(study, space.get(chosen), trials, trial)
        for family in space:  # finite families only, their neighbourhoods exhausted: enumerate
            for point in _lattice(family):
                if candidate_key(point) not in taken:
                    return point
        return self._random_point(space.defenses[0], trial)  # everything tried: a repeat

    def _start_design(self) -> list[dict]:
        """The preset's start points, then each continuous family's corners (seeded order)."""
        points = list(self._start)
        started = {p.get("defense") for p in points}
        for family in self._space:
            if _is_finite(family):
                if family.defense not in started:  # no start point: the middle of its lattice
                    lattice = _lattice(family)
                    points.append(lattice[len(lattice) // 2])
                continue
            corners = [dict(zip([r.name for r in family.ranges], values, strict=True))
                       for values in itertools.product(*[(r.low, r.high) for r in family.ranges])]
            random.Random(self._seed).shuffle(corners)
            points += [{"defense": family.defense, **_cast(family, c)} for c in corners]
        return points

    def _widened(self, study: Study) -> SearchSpace:
        if not self._extend:
            return self._space
        asked = study.get_trials(deepcopy=False)
        trials = [t for t in asked if t.state == TrialState.COMPLETE]
        front = self._carrying(study, trials)
        design = {candidate_key(p) for p in self._start_design()}
        families = []
        for family in searched_ranges(self._space, asked):  # what earlier trials were asked within
            inside = sum(t.params.get("defense") == family.defense and candidate_key(t.params) not in design
                         for t in trials)
            if inside < EXTEND_AFTER:  # the front sits at a corner of the start design: look inside first
                families.append(family)
                continue
            ranges = []
            for r in family.ranges:
                values = [t.params[r.name] for t in front if t.params.get("defense") == family.defense
                          and r.name in t.params]
                preset = next(x for x in self._space.get(family.defense).ranges if x.name == r.name)
                step = EXTEND_BY * preset.width  # of the preset's range: steps add, they do not compound
                for _ in range(MAX_EXTENSIONS):
                    ends = {r.end_of(v) for v in values} - {None}
                    wider = r
                    for end in sorted(ends):
                        wider = wider.widened(end, step)
                    if wider == r:
                        break
                    r = wider
                ranges.append(r)
            families.append(replace(family, ranges=tuple(ranges)))
        return replace(self._space, defenses=tuple(families))

    def _carrying(self, study: Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """The front's points that carry it: each alone holds `MATERIAL` of its hypervolume. One
        at the edge of the normal teacher's accuracy, say, adds almost nothing; searching past
        or around it would buy nothing either."""
        front = _front(study, trials)
        reference = self._reference(study, trials)
        signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        whole = _hypervolume([t.values for t in front], reference, signs)
        return [t for t in front if whole > 0 and whole - _hypervolume(
            [o.values for o in front if o is not t], reference, signs) >= MATERIAL * whole]

    def _model_proposal(self, study: Study, family: DefenseSpace, trials: list[FrozenTrial],
                        trial: FrozenTrial) -> dict:
        """The lattice point of the family's (widened) box whose optimistic outcome would add
        most to the front's hypervolume (see `_Surrogate`)."""
        mine = [t for t in trials if t.params.get("defense") == family.defense]
        done = [t for t in mine if t.state == TrialState.COMPLETE and t.values is not None
                and all(math.isfinite(v) for v in t.values)]
        if len(done) < _MODEL_AFTER:
            return self._random_point(family, trial)
        box = self._space.get(family.defense)  # coordinates: the preset's box is the unit square
        family = self._short_of_collapse(study, family, mine, done)
        where = [t.params for t in mine if _counts(t)]
        where += [p for n, p in self._plans.items() if n != trial.number and p["defense"] == family.defense]
        model = _Surrogate(box, [(t.params, t.values) for t in done], where, study.directions)
        front = [t.values for t in _front(study, [t for t in trials if t.state == TrialState.COMPLETE])]
        reference = self._reference(study, trials)
        rng = random.Random(self._trial_seed(trial))
        best, best_score = None, -math.inf
        # a coarse lattice first, a finer one once none of its points promises anything: with
        # a dozen trials per family and noise of a point, finer steps would tell nothing apart
        for n in LATTICES:
            for point in _box_lattice(family, n):
                score = model.improvement(point, front, reference) + rng.random() * 1e-9  # ties: seeded
                if score > best_score:
                    best, best_score = point, score
            if best_score > 1e-6:
                break
        if best is None or best_score == -math.inf:
            return self._random_point(family, trial)
        return {"defense": family.defense, **_cast(family, best)}

    def _short_of_collapse(self, study: Study, family: DefenseSpace, mine: list[FrozenTrial],
                           done: list[FrozenTrial]) -> DefenseSpace:
        """The family's box with each widened end pulled back halfway (on the knob's search
        scale) from the nearest value past the preset's range where a teacher fell below the
        focus floor to the farthest one where teachers stayed within it: a bisection towards
        the edge of collapse. One extension step doubles ω on a log scale, and past the edge
        a teacher collapses (MNIST-1D: 97.5 % at ω = 0.04, 60-70 % at 0.085); without this the
        model's optimism, steep there, spent a trial after another on such teachers.

        Fallen below the floor: finished below it, or gated (`--max-teacher-drop`: infeasible)
        or diverged, which the study holds as pruned. A collapse is laid to every knob past the
        preset's range in that trial, since the trial cannot say which knob did it: at worst a
        widened end of an innocent knob is bisected too, and searched again from there.
        `mine`: the family's trials; `done`: those of them finished with finite values."""
        floor = self._reference_point[0] if self._reference_point else None
        if floor is None:
            return family
        sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
        lost = [t.params for t in done if sign * t.values[0] <= sign * floor]
        lost += [t.params for t in mine if t.state == TrialState.PRUNED
                 and t.user_attrs.get("status") in ("infeasible", "diverged")]
        if not lost:
            return family
        kept = [t.params for t in done if sign * t.values[0] > sign * floor]
        preset = self._space.get(family.defense)
        ranges = []
        for r in family.ranges:
            p = next(x for x in preset.ranges if x.name == r.name)
            low, high = r.low, r.high
            if not r.knob.integer:  # the preset's own range is searched in full
                good = max([p.high, *(k[r.name] for k in kept if r.name in k)])
                bad = [x[r.name] for x in lost if r.name in x and x[r.name] > good]
                if bad:
                    high = min(high, r.unscaled((r.scaled(good) + r.scaled(min(bad))) / 2))
                good = min([p.low, *(k[r.name] for k in kept if r.name in k)])
                bad = [x[r.name] for x in lost if r.name in x and x[r.name] < good]
                if bad:
                    low = max(low, r.unscaled((r.scaled(good) + r.scaled(max(bad))) / 2))
            ranges.append(replace(r, low=low, high=high))
        return replace(family, ranges=tuple(ranges))

    def _reference(self, study: Study, trials: list[FrozenTrial]) -> list[float]:
        """The hypervolume's reference point: `reference` where given (teacher accuracy 0, as
        the sweep's report), else a hair past the worst value seen."""
        done = [t.values for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
        out = []
        for i, d in enumerate(study.directions):
            given = self._reference_point[i] if i < len(self._reference_point) else None
            if given is not None:
                out.append(given)
            else:
                values = [v[i] for v in done if math.isfinite(v[i])]
                worst = (min(values) if d == StudyDirection.MAXIMIZE else max(values)) if values else 0.0
                out.append(worst - 1e-6 if d == StudyDirection.MAXIMIZE else worst + 1e-6)
        return out

    def _random_point(self, family: DefenseSpace, trial: FrozenTrial) -> dict:
        rng = random.Random(self._trial_seed(trial))
        values = {}
        for r in family.ranges:
            if r.knob.integer:
                values[r.name] = rng.randint(int(r.low), int(r.high))
            else:
                values[r.name] = min(r.high, max(r.low, r.unscaled(rng.uniform(r.scaled(r.low), r.scaled(r.high)))))
        return {"defense": family.defense, **values}

    def _trial_seed(self, trial: FrozenTrial) -> int:
        return self._seed * 100_003 + trial.number


def _counts(t: FrozenTrial) -> bool:
    """Trials whose candidate is taken: finished, gated or running; not a failure (it may be run
    again) nor a repeat told as pruned."""
    return t.state != TrialState.FAIL and "repeat_of" not in t.user_attrs and "defense" in t.params


def _front(study: Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trials no other finished trial dominates."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
            and all(math.isfinite(v) for v in t.values)]
    signs = [1 if d == StudyDirection.MAXIMIZE else -1 for d in study.directions]

    def dominates(a, b):
        pa = [s * v for s, v in zip(signs, a.values, strict=True)]
        pb = [s * v for s, v in zip(signs, b.values, strict=True)]
        return all(x >= y for x, y in zip(pa, pb, strict=True)) and pa != pb

    front, seen = [], set()
    for t in sorted(done, key=lambda t: t.number):
        # a trial with the values of an earlier one adds no point (a repeat of a deterministic
        # outcome): the earlier one stands for both
        if tuple(t.values) not in seen and not any(dominates(o, t) for o in done):
            front.append(t)
            seen.add(tuple(t.values))
    return front


def _is_finite(family: DefenseSpace) -> bool:
    return family.candidates() is not None


def _lattice(family: DefenseSpace) -> list[dict]:
    ranges = [range(int(r.low), int(r.high) + 1) for r in family.ranges]
    return [{"defense": family.defense, **dict(zip([r.name for r in family.ranges], v, strict=True))}
            for v in itertools.product(*ranges)]


def _untried_neighbour(family: DefenseSpace, front: list[FrozenTrial], taken: set) -> dict | None:
    """One integer step from a front point of the family, in one knob, not yet tried."""
    for t in sorted(front, key=lambda t: t.number):
        if t.params.get("defense") != family.defense:
            continue
        for r in family.ranges:
            for step in (-1, 1):
                value = int(t.params[r.name]) + step
                point = {**t.params, r.name: value}
                if r.low <= value <= r.high and candidate_key(point) not in taken:
                    return point
    return None


def _cast(family: DefenseSpace, values: dict) -> dict:
    return {r.name: int(round(values[r.name])) if r.knob.integer else float(values[r.name])
            for r in family.ranges if r.name in values}


def _contains(distribution: BaseDistribution, value) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def _box_lattice(family: DefenseSpace, n: int) -> list[dict]:
    """n evenly spaced values per knob over its (widened) range, on its search scale, ends
    included (an integer knob: each of its values when there are at most n)."""
    axes = []
    for r in family.ranges:
        if r.knob.integer and r.high - r.low + 1 <= n:
            axes.append([float(v) for v in range(int(r.low), int(r.high) + 1)])
        else:
            inner = [r.unscaled(r.scaled(r.low) + r.width * i / (n - 1)) for i in range(1, n - 1)]
            axes.append([r.low, *(min(r.high, max(r.low, v)) for v in inner), r.high])  # ends exact
    names = [r.name for r in family.ranges]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes)]


class _Surrogate:
    """What a point of one family would score, optimistically: each objective from a plane
    fitted locally to the finished trials (`_local_linear`), moved in its better direction by the
    distance to the nearest tried point times the objective's typical slope. Far from every
    trial the optimism dominates and the search fills the box, ends first; near the front it
    refines where a better point is plausible. Coordinates: the preset's box as the unit cube,
    each knob on its search scale, so a widened range lies outside [0, 1]."""

    def __init__(self, box: DefenseSpace, done: list[tuple[dict, Sequence[float]]], tried: list[dict],
                 directions: Sequence[StudyDirection]):
        self._box = box
        self._x = [self._unit(p) for p, _ in done]
        self._y = [list(v) for _, v in done]
        self._tried = [self._unit(p) for p in tried if all(r.name in p for r in box.ranges)]
        self._signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions]
        self._slopes = [self._slope(i) for i in range(len(directions))]

    def _unit(self, params: dict) -> list[float]:
        return [(r.scaled(params[r.name]) - r.scaled(r.low)) / (r.width or 1.0) for r in self._box.ranges]

    def _slope(self, i: int) -> float:
        """The median change of objective i per unit of distance between two finished trials."""
        pairs = itertools.combinations(zip(self._x, self._y, strict=True), 2)
        slopes = sorted(abs(a[i] - b[i]) / d for (xa, a), (xb, b) in pairs if (d := math.dist(xa, xb)) > 1e-9)
        return slopes[len(slopes) // 2] if slopes else 0.0

    def _local_linear(self, x: list[float]) -> list[float]:
        """Each objective at x from a plane fitted to the finished trials, each weighted by its
        closeness to x (a trend carries past the points, as a stronger defense keeps costing
        clones more), falling back to the weighted mean where a plane is underdetermined."""
        import numpy as np

        points = np.asarray(self._x, dtype=float)
        values = np.asarray(self._y, dtype=float)
        weights = 1.0 / (((points - np.asarray(x)) ** 2).sum(axis=1) + BANDWIDTH ** 2)
        design = np.hstack([np.ones((len(points), 1)), points - np.asarray(x)])
        if len(points) <= design.shape[1]:
            return list((weights @ values) / weights.sum())
        w = np.sqrt(weights)[:, None]
        ridge = RIDGE * np.eye(design.shape[1])
        ridge[0, 0] = 0.0  # the level is free, the slopes are shrunk
        coef = np.linalg.solve((design * w).T @ (design * w) + ridge, (design * w).T @ (values * w))
        return list(coef[0])

    def improvement(self, params: dict, front: list[Sequence[float]], reference: Sequence[float]) -> float:
        x = self._unit(params)
        gap = min((math.dist(x, t) for t in self._tried), default=1.0)
        if gap < 1e-9:
            return -math.inf  # tried or in flight
        mean = self._local_linear(x)
        if any(s * m <= s * r for m, s, r in zip(mean, self._signs, reference, strict=True)):
            return 0.0  # the plane itself puts it outside the reference box (below the focus floor)
        hoped = [m + s * slope * gap for m, s, slope in zip(mean, self._signs, self._slopes, strict=True)]
        return _hypervolume([*front, hoped], reference, self._signs) - _hypervolume(front, reference, self._signs)


def _hypervolume(points: list[Sequence[float]], reference: Sequence[float], signs: Sequence[float]) -> float:
    """Two objectives: the area the points dominate, bounded by the reference."""
    (s0, s1), (r0, r1) = signs, (signs[0] * reference[0], signs[1] * reference[1])
    inside = [(s0 * p[0], s1 * p[1]) for p in points]  # both maximised now
    inside = [(a, b) for a, b in inside if a > r0 and b > r1]
    area, level = 0.0, r1
    for a, b in sorted(inside, reverse=True):  # best first objective first
        if b > level:
            area += (a - r0) * (b - level)
            level = b
    return area
