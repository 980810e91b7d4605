"""ALMA-EA: a RACE-style evolutionary population of allocator heads, evaluated on Ray.

RACE (Li et al., ICML 2023) trains one RL team and a population of EA teams that all share
one representation (the encoder); only the small policy heads are evolved. Here the shared
part is everything of the `allocator` module except the autoregressive pointer head of
`AllocatorNet` (the parameters whose names start with `ptr_`: `ptr_query`, `ptr_key`,
`ptr_message`, `ptr_count`, `ptr_out`). A **head** is a dict name -> tensor of those
parameters, keyed as in `AllocatorNet` (e.g. `"ptr_query.weight"`).

One generation (every `generations_every` training iterations, from `EvolutionCallback`):

1. **Evaluation.** Every member's head and the RL allocator's current head are scored by the
   mean team return (`info["team_return"]` at an episode's last step, written by
   `HierarchicalEnv`) over `episodes_per_eval` episodes. All members share the current
   encoder, value net and worker module of the RL team (the learner's weights); only the
   pointer head differs. Both levels act **greedily** (most likely allocation, decoded
   autoregressively; argmax worker actions), as RACE evaluates its deterministic actors, so
   the episode seeds are the only source of noise. All members of one generation play the
   same seeds (common random numbers), which makes their comparison fairer; the seeds change
   from generation to generation. Members are evaluated in parallel as Ray tasks (at most
   `eval_workers` of them, each playing a chunk of members); the tasks reserve no CPU and are
   not captured by a Tune trial's placement group, so they cannot wait forever for CPUs the
   trial holds. Copies of the modules are built inside the tasks: the RL modules' weights are
   never touched.
2. **Selection.** The `round(elite_fraction * population_size)` fittest members (at least
   one when `elite_fraction > 0`) survive unchanged, in their slots. Every other slot gets a
   child of two parents, each the winner of a tournament of `tournament_size` members drawn
   without replacement.
3. **Crossover** (`crossover`). RACE crosses over at the agent level: each agent of a team
   has its own policy network, and a child takes each agent's network from one parent. The
   allocator's pointer head is shared by all agent slots, so there are no per-agent networks
   to swap; the analogous unit here is the **output unit** of each layer: for every layer of
   the head, every output unit (a row of the weight matrix together with its bias entry) is
   taken from either parent with probability 1/2. A unit is therefore never split between
   parents, as an agent's network is never split in RACE.
4. **Mutation** (`mutate`). With probability `mutation_prob` an individual is mutated; then
   each weight is picked with probability `mutation_frac` (a Bernoulli mask, so the expected
   number of changed weights is `mutation_prob * mutation_frac * n_weights` and never rounds
   to zero), and a picked weight gets, with probability `super_mutation_prob`, Gaussian noise
   with std `10 * mutation_std * |w|` (a super mutation); else with probability `reset_prob`
   a fresh value from PyTorch's default initialisation of its layer,
   U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (a reset); else Gaussian noise with std
   `mutation_std * |w|`. A weight that is exactly 0 changes only by a reset.
5. **Injection.** Every `inject_rl_every` generations (0 = never) the RL allocator's head
   replaces the worst member of the evaluated population (an exact copy, not mutated).

What the EA rollouts train: PPO is on-policy, so the EA rollouts **do not enter the PPO
batch** (they would be off-policy data for the RL heads, and PPO's ratio and GAE assume the
sampling policy is the one being trained; the value function is not fitted on them either,
since their returns are those of other allocators). They train the **shared encoder through
the MI term**: after each generation, `ea_mi_steps` gradient steps of `mi_weight * mi_loss`
(RACE's MI objective) run on the allocator observations of all evaluation episodes. The MINE
bound is a property of the joint distribution of (embedding, global summary) over states;
no policy ratio enters it, so states visited by other allocators are valid data for it, and
they widen the states the representation must summarise. Only the allocator's encoder and
its MINE critic get these gradients (not the pointer heads, not the value net, not the
workers), and the env runners receive the new weights before the next sampling round. With
`mi_scheme=1` (MI on the workers) or without MI, the EA rollouts train nothing. The
best member is **not** copied back into the RL allocator: overwriting the RL head would make
the next PPO batch come from a policy the optimiser state and the value function were not
fitted to. The population is thus a search over heads on top of the learned representation,
reported as `evolution/best_fitness`, `evolution/mean_fitness`, `evolution/rl_fitness`,
`evolution/rl_rank` (1 = the RL head beats every member) and `evolution/ea_mi_value` (the MI
estimate of the last step on EA data); `best_head(algo)` returns the
fittest evaluated head for use at evaluation time.

The population, the generation counter, the generator state and the last fitness values are
part of the algorithm's checkpoint (`AlmaPPO.get_state`/`set_state` call
`evolution_state`/`restore_evolution_state`), so a resumed run continues the same population.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ray.rllib.callbacks.callbacks import RLlibCallback

from rllib_alma_mi.rllib.callbacks import add_callback
from rllib_alma_mi.settings import EvolutionSettings

HEAD_PREFIX = "ptr_"
STATE_KEY = "alma_evolution"
ATTRIBUTE = "_alma_evolution"
SUPER_MUTATION_SCALE = 10.0
Head = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------- heads
def head_of(net: torch.nn.Module) -> Head:
    """A detached copy of the pointer-head parameters of an `AllocatorNet` (or of a module
    with the net under `.net`)."""
    net = getattr(net, "net", net)
    return {
        name: p.detach().clone()
        for name, p in net.named_parameters()
        if name.startswith(HEAD_PREFIX)
    }


def head_from_state(state: dict[str, Any], prefix: str = "net.") -> Head:
    """The head inside an allocator module's state dict (tensors or numpy arrays)."""
    start = prefix + HEAD_PREFIX
    return {
        key[len(prefix) :]: torch.as_tensor(np.asarray(value)).clone()
        for key, value in state.items()
        if key.startswith(start)
    }


def load_head(net: torch.nn.Module, head: Head) -> None:
    """Copy `head` into the pointer head of `net` (an AllocatorNet or a module with `.net`)."""
    net = getattr(net, "net", net)
    params = dict(net.named_parameters())
    expected = sorted(k for k in params if k.startswith(HEAD_PREFIX))
    if sorted(head) != expected:
        raise ValueError(f"head keys {sorted(head)} do not match the net's {expected}")
    with torch.no_grad():
        for name, value in head.items():
            target = params[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"head[{name!r}] has shape {tuple(value.shape)}, the net expects "
                    f"{tuple(target.shape)}"
                )
            target.copy_(torch.as_tensor(value, dtype=target.dtype))


def clone_head(head: Head) -> Head:
    return {k: v.detach().clone() for k, v in head.items()}


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _init_bounds(head: Head) -> dict[str, float]:
    """PyTorch's default Linear init bound 1/sqrt(fan_in) for every tensor of the head."""
    fan_in = {_layer(k): v.shape[1] for k, v in head.items() if v.dim() == 2}
    return {k: 1.0 / math.sqrt(max(1, fan_in.get(_layer(k), v.shape[-1]))) for k, v in head.items()}


def random_head(template: Head, rng: torch.Generator) -> Head:
    """A fresh head shaped like `template`, drawn as PyTorch initialises Linear layers."""
    bounds = _init_bounds(template)
    return {
        k: (torch.rand(v.shape, generator=rng, dtype=v.dtype) * 2 - 1) * bounds[k]
        for k, v in sorted(template.items())
    }


# ------------------------------------------------------------------------------- operators
def _as_fitness(fitness: Any) -> np.ndarray:
    values = np.asarray(fitness, dtype=np.float64).reshape(-1)
    return np.where(np.isnan(values), -np.inf, values)  # a failed evaluation ranks last


def rank_order(fitness: Any) -> list[int]:
    """Member indices from the fittest to the least fit (ties: lower index first)."""
    values = _as_fitness(fitness)
    return [int(i) for i in np.argsort(-values, kind="stable")]


def tournament(fitness: Any, size: int, rng: torch.Generator) -> int:
    """The fittest of `size` members drawn without replacement (ties: first drawn)."""
    values = _as_fitness(fitness)
    drawn = torch.randperm(len(values), generator=rng)[:size].tolist()
    return max(drawn, key=lambda i: values[i])


def select_parents(
    fitness: Any, settings: EvolutionSettings, rng: torch.Generator, n_pairs: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """Elites (the `settings.n_elites()` fittest indices) and `n_pairs` tournament pairs."""
    n = len(_as_fitness(fitness))
    elites = rank_order(fitness)[: min(settings.n_elites(), n)]
    size = min(settings.tournament_size, n)
    pairs = [
        (tournament(fitness, size, rng), tournament(fitness, size, rng)) for _ in range(n_pairs)
    ]
    return elites, pairs


def crossover(a: Head, b: Head, rng: torch.Generator) -> tuple[Head, Head]:
    """Two complementary children: per layer, each output unit (a weight row and its bias
    entry) comes from `a` or `b` with probability 1/2 (the other child gets the other one)."""
    if sorted(a) != sorted(b):
        raise ValueError(f"crossover of heads with different keys: {sorted(a)} vs {sorted(b)}")
    masks: dict[str, torch.Tensor] = {}
    child_a, child_b = {}, {}
    for name in sorted(a):
        x, y = a[name], b[name]
        if x.shape != y.shape:
            raise ValueError(f"crossover: {name!r} has shapes {tuple(x.shape)}, {tuple(y.shape)}")
        layer = _layer(name)
        if layer not in masks or masks[layer].shape[0] != x.shape[0]:
            masks[layer] = torch.rand(x.shape[0], generator=rng) < 0.5
        take_a = masks[layer].view(-1, *([1] * (x.dim() - 1)))
        child_a[name] = torch.where(take_a, x, y).clone()
        child_b[name] = torch.where(take_a, y, x).clone()
    return child_a, child_b


def mutate(head: Head, rng: torch.Generator, settings: EvolutionSettings) -> Head:
    """A mutated copy of `head` (or an unchanged copy, with probability 1 - mutation_prob)."""
    out = clone_head(head)
    if torch.rand((), generator=rng).item() >= settings.mutation_prob:
        return out
    bounds = _init_bounds(head)
    for name in sorted(out):
        w = out[name]
        picked = torch.rand(w.shape, generator=rng) < settings.mutation_frac
        kind = torch.rand(w.shape, generator=rng)
        noise = torch.randn(w.shape, generator=rng, dtype=w.dtype)
        fresh = (torch.rand(w.shape, generator=rng, dtype=w.dtype) * 2 - 1) * bounds[name]
        is_super = kind < settings.super_mutation_prob
        is_reset = ~is_super & (kind < settings.super_mutation_prob + settings.reset_prob)
        scale = torch.where(is_super, SUPER_MUTATION_SCALE, 1.0) * settings.mutation_std
        mutated = torch.where(is_reset, fresh, w + noise * scale * w.abs())
        out[name] = torch.where(picked, mutated, w)
    return out


def next_generation(
    population: list[Head],
    fitness: Any,
    rl_head: Head | None,
    settings: EvolutionSettings,
    rng: torch.Generator,
) -> list[Head]:
    """The next population, same size and slots.

    Elites keep their slots unchanged; every other slot gets `mutate(crossover(p1, p2)[0])`
    of a tournament pair; with `rl_head`, the slot of the least fit member gets an exact copy
    of it instead (injection wins over elitism when every member is an elite).
    """
    n = len(population)
    values = _as_fitness(fitness)
    if len(values) != n:
        raise ValueError(f"fitness has {len(values)} values for a population of {n}")
    order = rank_order(values)
    inject_slot = order[-1] if rl_head is not None else None
    elites = set(order[: min(settings.n_elites(), n)])
    children = [i for i in range(n) if i not in elites and i != inject_slot]
    _, pairs = select_parents(values, settings, rng, len(children))
    new: list[Head | None] = [None] * n
    for i in elites:
        new[i] = clone_head(population[i])
    for slot, (p1, p2) in zip(children, pairs, strict=True):
        child, _ = crossover(population[p1], population[p2], rng)
        new[slot] = mutate(child, rng, settings)
    if inject_slot is not None:
        new[inject_slot] = clone_head(rl_head)
    return new  # type: ignore[return-value]


# ------------------------------------------------------------------------------ evaluation
def _stack(observations: list[Any]) -> Any:
    first = observations[0]
    if isinstance(first, dict):
        return {k: _stack([o[k] for o in observations]) for k in first}
    return torch.as_tensor(np.stack([np.asarray(o) for o in observations]))


def play_episode(
    env: Any, modules: dict[str, Any], seed: int, observations: list | None = None
) -> float:
    """One greedy episode of `HierarchicalEnv`; returns `info["team_return"]` of its last step.

    With `observations` given, appends to it the allocator's observation at each decision.
    """
    from ray.rllib.core.columns import Columns

    from rllib_alma_mi.keys import ALLOCATOR, agent_to_module

    obs, _ = env.reset(seed=seed)
    while True:
        if observations is not None and ALLOCATOR in obs:
            observations.append(obs[ALLOCATOR])
        groups: dict[str, list[str]] = {}
        for agent in obs:
            groups.setdefault(agent_to_module(agent), []).append(agent)
        actions: dict[str, Any] = {}
        with torch.no_grad():
            for module_id, agents in groups.items():
                out = modules[module_id].forward_inference(
                    {Columns.OBS: _stack([obs[a] for a in agents])}
                )
                chosen = out.get(Columns.ACTIONS)
                if chosen is None:
                    chosen = out[Columns.ACTION_DIST_INPUTS].argmax(-1)
                actions.update(zip(agents, chosen.cpu().numpy(), strict=True))
        obs, _, terms, truncs, infos = env.step(actions)
        if terms.get("__all__") or truncs.get("__all__"):
            last = next((i for i in infos.values() if "team_return" in i), None)
            if last is None:
                raise RuntimeError("the episode ended without info['team_return']")
            return float(last["team_return"])


def _make_env(env_name: str, env_config: dict[str, Any]) -> Any:
    """The hierarchy env; in a Ray worker a user's env registered only in the driver is
    found through Ray Tune's cluster-wide env registry (as RLlib's EnvRunners find it)."""
    from rllib_alma_mi.registry import make_env, registered_envs

    if env_name in registered_envs():
        return make_env(env_name, env_config)
    from ray.tune.registry import ENV_CREATOR, _global_registry

    if not _global_registry.contains(ENV_CREATOR, env_name):
        return make_env(env_name, env_config)  # raises "not registered"
    return _global_registry.get(ENV_CREATOR, env_name)(dict(env_config))


def evaluate_heads_locally(
    heads: list[Head],
    specs: dict[str, Any],
    states: dict[str, Any],
    env_name: str,
    env_config: dict[str, Any],
    seeds: list[int],
    observations: list | None = None,
) -> list[float]:
    """Mean team return over `seeds` of each head, in this process.

    `specs`: module id -> RLModuleSpec; `states`: module id -> module state (the RL team's).
    Fresh copies of the modules are built here; the heads are loaded into the allocator copy.
    With `observations` given, every allocator observation played is appended to it.
    """
    from rllib_alma_mi.keys import ALLOCATOR

    env = _make_env(env_name, env_config)
    modules = {}
    for module_id, spec in specs.items():
        module = spec.build()
        module.set_state(states[module_id])
        module.eval()
        modules[module_id] = module
    fitness = []
    for head in heads:
        load_head(modules[ALLOCATOR], head)
        returns = [play_episode(env, modules, s, observations) for s in seeds]
        fitness.append(float(np.mean(returns)))
    env.close()
    return fitness


def _evaluate_chunk(
    heads: list[Head],
    payload: tuple[dict[str, Any], dict[str, Any]],
    env_name: str,
    env_config: dict[str, Any],
    seeds: list[int],
    collect: bool,
) -> tuple[list[float], list]:
    specs, states = payload
    torch.set_num_threads(1)  # one thread per task: `eval_workers` bounds the parallelism
    observations: list | None = [] if collect else None
    fitness = evaluate_heads_locally(
        heads, specs, states, env_name, env_config, seeds, observations
    )
    return fitness, observations or []


_REMOTE = None


def _remote_evaluate():
    global _REMOTE
    if _REMOTE is None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        _REMOTE = ray.remote(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
        )(_evaluate_chunk)
    return _REMOTE


def evaluate_heads(
    heads: list[Head],
    specs: dict[str, Any],
    states: dict[str, Any],
    env_name: str,
    env_config: dict[str, Any],
    seeds: list[int],
    workers: int = 2,
    observations: list | None = None,
) -> list[float]:
    """Mean team return of each head over `seeds`, in up to `workers` parallel Ray tasks
    (in this process when Ray is not initialised). With `observations` given, the allocator
    observations of every episode played are appended to it."""
    import ray

    if not heads:
        return []
    if not ray.is_initialized():
        return evaluate_heads_locally(
            heads, specs, states, env_name, env_config, seeds, observations
        )
    chunks = np.array_split(np.arange(len(heads)), min(workers, len(heads)))
    payload = ray.put((specs, states))  # shipped once, shared by every task
    remote = _remote_evaluate()
    futures = [
        remote.remote(
            [heads[i] for i in chunk], payload, env_name, env_config, seeds,
            observations is not None,
        )
        for chunk in chunks
    ]
    fitness = []
    for chunk_fitness, chunk_observations in ray.get(futures):
        fitness.extend(chunk_fitness)
        if observations is not None:
            observations.extend(chunk_observations)
    return fitness


def mi_step_on_observations(learner: Any, observations: dict[str, Any]) -> float | None:
    """One gradient step of the allocator's MI term (`mi_weight * mi_loss`) on a batch of
    allocator observations, in `learner`; returns the MI estimate, or None when the allocator
    carries no MI term. Only the encoder and the MINE critic get gradients (the pointer head
    and the value net do not enter the term); the worker module is left alone, and a
    non-finite loss skips the step."""
    from rllib_alma_mi.keys import ALLOCATOR
    from rllib_alma_mi.rllib.allocator_module import TRAINING_ONLY_KEYS

    module = learner.module[ALLOCATOR].unwrapped()
    if getattr(module, "mi", None) is None:
        return None
    device = next(module.parameters()).device
    obs = _to_tensors(observations, device)
    enc = module.net.encode({k: v for k, v in obs.items() if k not in TRAINING_ONLY_KEYS})
    mi_loss, mi_value = module.mi.loss(module.mi.inputs_from_allocator(enc, obs), None)
    config = learner.config.get_config_for_module(ALLOCATOR)
    loss = config.mi_weight * mi_loss
    if not torch.isfinite(loss):
        return float("nan")
    optimizers = [o for _, o in learner.get_optimizers_for_module(ALLOCATOR)]
    for module_id in learner.module.keys():
        for _, optimizer in learner.get_optimizers_for_module(module_id):
            optimizer.zero_grad(set_to_none=True)  # no stale PPO gradient may be stepped
    loss.backward()
    grads = {
        learner.get_param_ref(p): p.grad for p in module.parameters() if p.grad is not None
    }
    grads = learner.postprocess_gradients_for_module(
        module_id=ALLOCATOR, config=config, module_gradients_dict=grads
    )
    for param in module.parameters():
        param.grad = grads.get(learner.get_param_ref(param))
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(mi_value.detach())


def _to_tensors(tree_: Any, device: Any) -> Any:
    if isinstance(tree_, dict):
        return {k: _to_tensors(v, device) for k, v in tree_.items()}
    return torch.as_tensor(tree_, device=device)


def _train_mi_on(algo: Any, observations: list, steps: int) -> float:
    """`steps` MI steps on the EA rollouts' allocator observations in every learner, then the
    new weights go to the env runners; returns the last step's mean MI estimate."""
    batch = _stack(observations)
    values = []
    for _ in range(steps):
        results = algo.learner_group.foreach_learner(
            lambda learner, obs=batch: mi_step_on_observations(learner, obs)
        )
        values = [r.get() for r in results if r.ok]
    if len(algo.learner_group) > 1:
        # Several learners each took these steps on their own copy (their gradients are not
        # averaged here, and MINE draws its negatives per learner): the first learner's
        # weights and optimizer state go to all, so they stay equal.
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_OPTIMIZER, COMPONENT_RL_MODULE
        from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

        state = algo.learner_group.get_state(components=[
            f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}",
            f"{COMPONENT_LEARNER}/{COMPONENT_OPTIMIZER}",
        ])
        # A learner ignores weights whose sequence number is not newer than its own.
        state[COMPONENT_LEARNER].pop(WEIGHTS_SEQ_NO, None)
        algo.learner_group.set_state(state)
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, inference_only=True
    )
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else float("nan")


# ------------------------------------------------------------------------------ population
def _to_numpy(head: Head) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in head.items()}


def _from_numpy(head: dict[str, Any]) -> Head:
    return {k: torch.as_tensor(np.asarray(v)).clone() for k, v in head.items()}


@dataclass
class EvolutionState:
    """The population and its bookkeeping, as kept on the algorithm and in checkpoints."""

    population: list[Head]
    rng: torch.Generator
    generation: int = 0
    fitness: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    best: Head | None = None  # the fittest member of the last evaluation

    @classmethod
    def create(cls, template: Head, settings: EvolutionSettings, seed: int) -> EvolutionState:
        rng = torch.Generator().manual_seed(int(seed))
        population = [random_head(template, rng) for _ in range(settings.population_size)]
        return cls(population=population, rng=rng)

    def to_dict(self) -> dict[str, Any]:
        return {
            "population": [_to_numpy(h) for h in self.population],
            "rng_state": self.rng.get_state().numpy().copy(),
            "generation": self.generation,
            "fitness": list(self.fitness),
            "metrics": dict(self.metrics),
            "best": None if self.best is None else _to_numpy(self.best),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvolutionState:
        rng = torch.Generator()
        rng.set_state(torch.as_tensor(np.asarray(data["rng_state"], dtype=np.uint8)))
        population = [_from_numpy(h) for h in data["population"]]
        return cls(
            population=population,
            rng=rng,
            generation=int(data["generation"]),
            fitness=[float(f) for f in data["fitness"]],
            metrics={k: float(v) for k, v in data["metrics"].items()},
            best=None if data.get("best") is None else _from_numpy(data["best"]),
        )


def settings_of(config: Any) -> EvolutionSettings | None:
    block = getattr(config, "evolution_config", None)
    return None if block is None else EvolutionSettings.from_dict(block)


def _learner_module_states(algo: Any) -> dict[str, Any]:
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    state = algo.learner_group.get_state(components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}")
    return state[COMPONENT_LEARNER][COMPONENT_RL_MODULE]


def _module_specs(algo: Any, module_ids: list[str]) -> dict[str, Any]:
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    specs = {}
    for module_id in module_ids:
        module = algo.get_module(module_id)
        specs[module_id] = RLModuleSpec(
            module_class=type(module),
            observation_space=module.observation_space,
            action_space=module.action_space,
            model_config=dict(module.model_config),
        )
    return specs


def _state_of(algo: Any) -> EvolutionState:
    from rllib_alma_mi.keys import ALLOCATOR

    state = getattr(algo, ATTRIBUTE, None)
    if state is None:
        settings = settings_of(algo.config)
        template = head_from_state(_learner_module_states(algo)[ALLOCATOR])
        seed = algo.config.seed if algo.config.seed is not None else 0
        state = EvolutionState.create(template, settings, seed=10_007 * (int(seed) + 1))
        setattr(algo, ATTRIBUTE, state)
    return state


def run_generation(algo: Any) -> dict[str, float]:
    """Evaluate the population and the RL head, log, and breed the next generation."""
    from rllib_alma_mi.keys import ALLOCATOR

    settings = settings_of(algo.config)
    state = _state_of(algo)
    states = _learner_module_states(algo)
    rl_head = head_from_state(states[ALLOCATOR])
    seed = algo.config.seed if algo.config.seed is not None else 0
    first = 1_000_003 * (int(seed) + 1) + state.generation * settings.episodes_per_eval
    seeds = [first + i for i in range(settings.episodes_per_eval)]
    trains_mi = settings.ea_mi_steps > 0 and algo.get_module(ALLOCATOR).mi is not None
    observations: list | None = [] if trains_mi else None
    scores = evaluate_heads(
        [*state.population, rl_head],
        _module_specs(algo, list(states)),
        states,
        algo.config.env,
        dict(algo.config.env_config),
        seeds,
        workers=settings.eval_workers,
        observations=observations,
    )
    fitness, rl_fitness = scores[:-1], scores[-1]
    state.best = clone_head(state.population[int(np.argmax(_as_fitness(fitness)))])
    every = settings.inject_rl_every
    inject = every > 0 and (state.generation + 1) % every == 0
    state.population = next_generation(
        state.population, fitness, rl_head if inject else None, settings, state.rng
    )
    state.generation += 1
    state.fitness = list(fitness)
    state.metrics = {
        "best_fitness": float(np.max(fitness)),
        "mean_fitness": float(np.mean(fitness)),
        "rl_fitness": float(rl_fitness),
        "rl_rank": float(1 + sum(f > rl_fitness for f in fitness)),
        "generation": float(state.generation),
    }
    if observations:
        state.metrics["ea_mi_value"] = _train_mi_on(algo, observations, settings.ea_mi_steps)
    return dict(state.metrics)


def best_head(algo: Any) -> Head | None:
    """The fittest head of the last evaluation (before breeding), or None before the first."""
    state = getattr(algo, ATTRIBUTE, None)
    return None if state is None or state.best is None else clone_head(state.best)


def evolution_state(
    algo: Any, state: dict[str, Any], components: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """`state` plus the population, for `Algorithm.get_state(components, not_components=)`;
    the population is a component named `alma_evolution`."""
    population = getattr(algo, ATTRIBUTE, None)
    wanted = algo._check_component(STATE_KEY, components, kwargs.get("not_components"))
    if population is not None and wanted:
        state[STATE_KEY] = population.to_dict()
    return state


def restore_evolution_state(algo: Any, state: dict[str, Any]) -> None:
    """Restore the population from a state written by `evolution_state`."""
    if STATE_KEY in state:
        setattr(algo, ATTRIBUTE, EvolutionState.from_dict(state[STATE_KEY]))


# --------------------------------------------------------------------------- RLlib glue
class EvolutionCallback(RLlibCallback):
    """Runs a generation every `generations_every` iterations; logs `evolution/...`."""

    def on_algorithm_init(self, *, algorithm: Any, **kwargs: Any) -> None:
        if settings_of(algorithm.config) is not None:
            _state_of(algorithm)

    def on_train_result(self, *, algorithm: Any, result: dict, **kwargs: Any) -> None:
        settings = settings_of(algorithm.config)
        if settings is None:
            return
        iteration = int(result.get("training_iteration", algorithm.training_iteration))
        if iteration % settings.generations_every == 0:
            run_generation(algorithm)
        metrics = _state_of(algorithm).metrics
        if metrics:
            result["evolution"] = dict(metrics)


def attach_evolution(config: Any) -> None:
    """Check the evolution block against the rest of `config` and add `EvolutionCallback`."""
    if getattr(config, "evolution_config", None) is None:
        return
    settings_of(config)
    if not config.enable_rl_module_and_learner:
        raise ValueError(
            "evolution() runs on RLlib's new API stack only; drop .evolution() or use the "
            "default api_stack()"
        )
    if config.allocation != "learned":
        raise ValueError(
            f"evolution() needs allocation='learned' (it evolves the allocator's head), got "
            f"allocation={config.allocation!r}; call .alma(allocation='learned') or drop "
            ".evolution()"
        )
    add_callback(config, EvolutionCallback)
