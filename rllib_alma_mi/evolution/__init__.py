"""ALMA-EA: a RACE-style evolutionary population of allocator heads, evaluated on Ray.

RACE (Li et al., ICML 2023) trains one RL team and a population of EA teams that all share
one representation (the encoder); only the small policy heads are evolved. Here the shared
part is everything of the `allocator` module except the autoregressive pointer head of
`AllocatorNet` (the parameters whose names start with `ptr_`: `ptr_query`, `ptr_key`,
`ptr_message`, `ptr_count`, `ptr_out`). A **head** is a dict name -> tensor of those
parameters, keyed as in `AllocatorNet` (e.g. `"ptr_query.weight"`).

One generation (every `generations_every` training iterations, from `EvolutionCallback`):

1. **Evaluation** (`rollouts`). Every member's head and the RL allocator's current head are
   scored by the mean team return (`info["team_return"]` at an episode's last step, written by
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
3. **Crossover** (`operators.crossover`). RACE crosses over at the agent level: each agent of a
   team has its own policy network, and a child takes each agent's network from one parent. The
   allocator's pointer head is shared by all agent slots, so there are no per-agent networks to
   swap; the analogous unit here is the **output unit** of each layer: for every layer of the
   head, every output unit (a row of the weight matrix together with its bias entry) is taken
   from either parent with probability 1/2. A unit is therefore never split between parents, as
   an agent's network is never split in RACE.
4. **Mutation** (`operators.mutate`). With probability `mutation_prob` an individual is
   mutated; then each weight is picked with probability `mutation_frac` (a Bernoulli mask, so
   the expected number of changed weights is `mutation_prob * mutation_frac * n_weights` and
   never rounds to zero), and a picked weight gets, with probability `super_mutation_prob`,
   Gaussian noise with std `10 * mutation_std * |w|` (a super mutation); else with probability
   `reset_prob` a fresh value from PyTorch's default initialisation of its layer,
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

Modules: `operators` (heads, selection, crossover, mutation, `next_generation`; pure torch),
`rollouts` (greedy episodes with a head, in this process or as Ray tasks), `mi_step` (the MI
steps on the EA rollouts), `state` (`EvolutionState` and the checkpoint component) and
`callback` (`run_generation`, `EvolutionCallback`, `attach_evolution`).
"""

from rllib_alma_mi.evolution.callback import EvolutionCallback, attach_evolution, run_generation
from rllib_alma_mi.evolution.operators import load_head
from rllib_alma_mi.evolution.state import best_head, evolution_state, restore_evolution_state
from rllib_alma_mi.settings import EvolutionSettings

__all__ = [
    "EvolutionCallback",
    "EvolutionSettings",
    "attach_evolution",
    "best_head",
    "evolution_state",
    "load_head",
    "restore_evolution_state",
    "run_generation",
]
