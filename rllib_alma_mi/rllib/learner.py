"""PPO learner that adds the MINE term, `total = ppo_loss + mi_weight * mi_loss`, the
allocator's optional imitation of the heuristic allocation, and its optional per-task credit."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from rllib_alma_mi.keys import (
    ALLOCATOR,
    IMITATION_SKIPPED,
    IMITATION_WEIGHT,
    MI_SKIPPED,
    PER_CHOICE_POLICY_LOSS,
    TASK_VF_EXPLAINED_VAR,
    TASK_VF_LOSS,
)
from rllib_alma_mi.losses import (
    ImitationLoss,
    LossTerms,
    MutualInfoLoss,
    PerChoiceInputs,
    PerChoicePPOLoss,
)
from rllib_alma_mi.losses.per_choice import ENTROPY
from rllib_alma_mi.nn.joint_allocation import JointAllocationLogits
from rllib_alma_mi.rllib.allocator_module import IMITATION_LOGP
from rllib_alma_mi.rllib.minibatches import ProportionalMiniBatchIterator
from rllib_alma_mi.rllib.task_credit import TASK_ADVANTAGES, TASK_VALUE_TARGETS, PerTaskGAE

logger = logging.getLogger(__name__)

NUM_NONFINITE_UPDATES = "num_nonfinite_updates"
NUM_EMPTY_MINIBATCHES = "num_empty_minibatches"


def renormalized_advantages(batch: dict[str, Any]) -> dict[str, Any]:
    """Advantages standardised over the minibatch's real (loss-mask) rows only.

    RLlib standardises advantages over every row, including the artificial last step PPO adds
    to each episode chunk. The allocator's chunks hold only a few decisions, so those rows are
    a large share of its batch and the real rows' advantages were left with a large non-zero
    mean, which shifts every decision's advantage the same way.
    """
    if Columns.LOSS_MASK not in batch or Postprocessing.ADVANTAGES not in batch:
        return batch
    mask = batch[Columns.LOSS_MASK].bool()
    if int(mask.sum()) < 2:
        return batch
    adv = batch[Postprocessing.ADVANTAGES]
    real = adv[mask]
    batch = dict(batch)
    batch[Postprocessing.ADVANTAGES] = (adv - real.mean()) / real.std().clamp(min=1e-4)
    return batch


def learner_threads(config: Any) -> int:
    """Torch threads for a learner: the CPUs it may use while it updates.

    A remote learner owns ``num_cpus_per_learner``. The local learner (``num_learners=0``)
    runs in the algorithm's process between two sampling rounds, so while it updates the env
    runners' CPUs are idle and it may use those as well. Using more threads than that made
    updates several times slower (OpenMP threads competing with running env runners).
    """
    if config.num_learners > 0:
        cpus = config.num_cpus_per_learner
        return max(1, int(cpus)) if isinstance(cpus, int | float) else 1
    cpus = config.num_cpus_for_main_process + (
        config.num_env_runners * config.num_cpus_per_env_runner
    )
    return max(1, int(cpus))


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every entry is finite, from one fused norm per tensor: a NaN or inf entry makes
    its tensor's norm non-finite (so does a norm beyond float range, which no update survives
    either). Checking each tensor with isfinite cost several percent of an update."""
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def _agreed(finite: list[bool], device: Any = None) -> list[bool]:
    """Per module, whether its update is finite on every data-parallel learner.

    With several learners the gradients are averaged over them first (`_average_gradients`),
    so a non-finite gradient anywhere is non-finite everywhere, but a loss is each learner's
    own: one min-all-reduce makes every learner skip (or keep) the same module updates, so
    their weights and optimizer states stay equal. A single learner: `finite`.
    """
    import torch.distributed as dist

    if _world_size() < 2:
        return finite
    flags = torch.tensor([float(f) for f in finite], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return [bool(f) for f in flags.tolist()]


def _world_size() -> int:
    """The number of data-parallel learners (1 without torch.distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average_gradients(params: list[torch.Tensor]) -> None:
    """Replace each parameter's `.grad` by its mean over the data-parallel learners (a
    missing gradient counts as zero; it stays None where no learner has one), in one
    all-reduce whose layout is the same on every learner."""
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        + [torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    world = _world_size()
    offset = 0
    for param in params:
        n = param.numel()
        param.grad = flat[offset : offset + n].view_as(param) / world
        offset += n
    for param, present in zip(params, flat[offset:].tolist(), strict=True):
        if not present:
            param.grad = None


def _rank() -> int:
    """This learner's rank among data-parallel learners (0 without torch.distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def imitation_weight_at(config: Any, env_steps: float) -> float:
    """The imitation term's weight after `env_steps` (RLlib's lifetime env-step counter):
    `imitation_weight` decaying linearly to 0 at `imitation_steps`; 0 when imitation is off."""
    steps = getattr(config, "imitation_steps", 0)
    if not steps:
        return 0.0
    return float(config.imitation_weight) * max(0.0, 1.0 - float(env_steps) / steps)


class AlmaPPOLearner(PPOTorchLearner):
    """`PPOTorchLearner` plus the MI term of the module that carries it.

    Logs `mi_loss` and `mi_value` under `result["learners"][module_id]`. While the allocator
    imitates the heuristic (`imitation_steps`), adds `imitation_weight * imitation_loss` to its
    loss and logs both under `result["learners"]["allocator"]`. A minibatch a term cannot
    use (`rllib_alma_mi.losses`: too few valid rows, non-finite inputs) leaves that term out
    and counts it in `mi_skipped` / `imitation_skipped` (lifetime sums); PPO's update goes on.
    Minibatches give the allocator and the workers the same number of epochs (see
    `ProportionalMiniBatchIterator`).

    Non-finite updates are skipped per module: when a module's loss or any of its gradients is
    NaN/inf on a minibatch, that module's parameters and optimizer state are left untouched for
    that minibatch (the other module still updates) and
    `result["learners"][module_id]["num_nonfinite_updates"]` (a lifetime count) goes up by one.
    RLlib's own handling would not do this: by default it zeroes NaN gradients and turns inf
    into huge values before stepping, and with `torch_skip_nan_gradients=True` it steps on them.
    (`AlmaPPOConfig` sets that flag: nothing non-finite reaches RLlib's step, and the flag turns
    off its per-tensor checks.)

    A module whose minibatch holds no real row (every loss-mask entry 0: only the bootstrap
    rows PPO appends to each episode chunk, which happens to the allocator when it acts only on
    events and a slice is small) has nothing to learn from: its update is skipped the same way,
    without computing PPO's loss (a masked mean over no rows is 0/0), and counted in
    `result["learners"][module_id]["num_empty_minibatches"]` (a lifetime count), not as a
    non-finite update.

    With `allocator_credit="task"` the learner connector gets a `PerTaskGAE` piece after
    RLlib's GAE, and the allocator's PPO loss is `PerChoicePPOLoss` (a clipped surrogate per
    pointer choice with per-task advantages, a per-task value loss, the joint entropy), logged
    as `per_choice_policy_loss`, `task_vf_loss` and `task_vf_explained_var`, and under PPO's
    own names (`policy_loss`, `vf_loss`, `entropy`, `mean_kl_loss`, `vf_explained_var`).
    """

    def build(self) -> None:
        torch.set_num_threads(learner_threads(self.config))
        self._empty: set[str] = set()  # modules whose current minibatch has no real row
        self._imitation_weight = imitation_weight_at(self.config, 0)
        self._warned: set[tuple[str, str]] = set()
        self._task_credit = getattr(self.config, "allocator_credit", "team") == "task"
        super().build()
        if self._task_credit:
            if self._learner_connector is None or not (
                self.config.add_default_connectors_to_learner_pipeline
            ):
                raise ValueError(
                    "allocator_credit='task' computes its per-task GAE in the learner "
                    "connector after RLlib's GAE; keep the default learner connectors "
                    "(add_default_connectors_to_learner_pipeline=True) or use "
                    "allocator_credit='team'"
                )
            self._learner_connector.append(
                PerTaskGAE(gamma=self.config.gamma, lambda_=self.config.lambda_)
            )

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        # RLlib's Adam, fused into one kernel over all parameters: on CPU torch defaults to
        # one Python-level step per parameter tensor.
        params = self.get_parameters(self._module[module_id])
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.Adam(params, fused=True),
            params=params,
            lr_or_lr_schedule=config.lr,
        )

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        loss_mask = batch.get(Columns.LOSS_MASK)
        if loss_mask is not None and not bool(loss_mask.any()):
            self._empty.add(module_id)
            # A zero that backward() accepts and that reaches no parameter.
            return torch.zeros((), device=loss_mask.device, requires_grad=True)
        if module_id == ALLOCATOR and self._task_credit:
            loss = self._per_choice_loss(module_id, config, batch, fwd_out)
        else:
            batch = renormalized_advantages(batch)
            loss = super().compute_loss_for_module(
                module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
            )
        if IMITATION_LOGP in fwd_out:
            terms = ImitationLoss()(fwd_out[IMITATION_LOGP], loss_mask)
            self._log_terms(module_id, terms, IMITATION_SKIPPED)
            loss = loss + self._imitation_weight * terms.loss
        head = getattr(self.module[module_id].unwrapped(), "mi", None)
        if head is not None and "mi_x" in fwd_out:
            terms = MutualInfoLoss(head)(fwd_out, loss_mask)
            self._log_terms(module_id, terms, MI_SKIPPED)
            loss = loss + config.mi_weight * terms.loss
        return loss

    def _per_choice_loss(
        self, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        """The allocator's PPO loss with per-task credit (`PerChoicePPOLoss`), plus PPO's KL
        term when `use_kl_loss`; logs its terms."""
        module = self.module[module_id].unwrapped()
        loss_mask = batch.get(Columns.LOSS_MASK)
        step_logits = fwd_out[Columns.ACTION_DIST_INPUTS].unflatten(-1, (-1, module.n_tasks))
        old_logits = batch[Columns.ACTION_DIST_INPUTS].unflatten(-1, (-1, module.n_tasks))
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        terms = PerChoicePPOLoss(
            clip_param=config.clip_param,
            vf_loss_coeff=config.vf_loss_coeff,
            entropy_coeff=float(entropy_coeff),
            vf_clip_param=config.vf_clip_param,
        )(
            PerChoiceInputs(
                step_logits=step_logits,
                old_step_logits=old_logits,
                allocation=batch[Columns.ACTIONS],
                live_choices=module.live_choices(batch),
                task_advantages=batch[TASK_ADVANTAGES],
                task_value_targets=batch[TASK_VALUE_TARGETS],
                task_values=module.compute_task_values(batch),
                task_mask=batch[Columns.OBS]["task_mask"],
                loss_mask=loss_mask,
            )
        )
        loss = terms.loss
        kl = torch.zeros((), device=loss.device)
        if config.use_kl_loss:
            rows = (
                loss_mask.bool() if loss_mask is not None
                else torch.ones(len(step_logits), dtype=torch.bool, device=loss.device)
            )
            action_kl = JointAllocationLogits(old_logits).kl(JointAllocationLogits(step_logits))
            kl = action_kl[rows].sum() / rows.sum().clamp(min=1)
            loss = loss + self.curr_kl_coeffs_per_module[module_id] * kl
        metrics = terms.metrics
        self.metrics.log_dict(
            {
                **metrics,
                POLICY_LOSS_KEY: metrics[PER_CHOICE_POLICY_LOSS],
                VF_LOSS_KEY: metrics[TASK_VF_LOSS],
                ENTROPY_KEY: metrics[ENTROPY],
                LEARNER_RESULTS_KL_KEY: kl.detach(),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: metrics[TASK_VF_EXPLAINED_VAR],
            },
            key=module_id,
            window=1,
        )
        return loss

    def _log_terms(self, module_id: str, terms: LossTerms, skip_counter: str) -> None:
        """A term's metrics, and its lifetime count of skipped minibatches."""
        for name, value in terms.metrics.items():
            self.metrics.log_value((module_id, name), value, window=1)
        self.metrics.log_value(
            (module_id, skip_counter), int(terms.skipped is not None), reduce="lifetime_sum"
        )
        if terms.skipped is not None and (module_id, terms.skipped) not in self._warned:
            self._warned.add((module_id, terms.skipped))
            logger.warning(
                "module %r: a minibatch's %s term was skipped (%s); counted in %s",
                module_id, skip_counter.removesuffix("_skipped"), terms.skipped, skip_counter,
            )

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        steps = timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME) or 0
        self._imitation_weight = imitation_weight_at(self.config, steps)
        if not getattr(self.config, "imitation_steps", 0):
            return
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            if hasattr(module, "imitating"):
                # Past the decay the heuristic's allocation is no longer scored at all.
                module.imitating = self._imitation_weight > 0
                self.metrics.log_value(
                    (module_id, IMITATION_WEIGHT), self._imitation_weight, window=1
                )

    def compute_gradients(self, loss_per_module: dict[str, Any], **kwargs) -> dict[Any, Any]:
        """Gradients of every module whose minibatch has real rows and whose loss and gradients
        are finite; the others are dropped (their `.grad` is cleared, so the optimizer step
        leaves them and their state alone)."""
        empty, self._empty = self._empty, set()
        grads = super().compute_gradients(loss_per_module, **kwargs)
        # Every learner runs the same collectives in the same order: all modules, sorted.
        module_ids = sorted(self.module.keys(), key=str)
        if _world_size() > 1:
            for module_id in module_ids:
                _average_gradients(list(self.module[module_id].parameters()))
            grads = {ref: param.grad for ref, param in self._params.items()}
        module_grads_of, local_finite, local_rows = {}, [], []
        for module_id in module_ids:
            module_grads = {}
            for _, optimizer in self.get_optimizers_for_module(module_id):
                module_grads.update(self.filter_param_dict_for_optimizer(grads, optimizer))
            module_grads_of[module_id] = module_grads
            loss = loss_per_module.get(module_id)
            local_finite.append(
                (loss is None or bool(torch.isfinite(loss).all()))
                and _all_finite(list(module_grads.values()))
            )
            local_rows.append(module_id not in empty)
        # One all-reduce for both flags: a module updates only where every learner has real
        # rows for it and every learner's loss and gradients are finite.
        agreed = _agreed(local_finite + local_rows, self._device)
        n = len(module_ids)
        first = _rank() == 0  # counts and warns once for all data-parallel learners
        for module_id, finite, rows, here in zip(
            module_ids, agreed[:n], agreed[n:], local_finite, strict=True
        ):
            # A module can have no rows in this learner's minibatch and rows in another's (a
            # small allocator batch over several learners): it still holds the averaged
            # gradients, and drops them when the other learners do.
            loss, module_grads = loss_per_module.get(module_id), module_grads_of[module_id]
            if loss is not None:
                self.metrics.log_value(
                    (module_id, NUM_EMPTY_MINIBATCHES), int(not rows and first),
                    reduce="lifetime_sum",
                )
                self.metrics.log_value(
                    (module_id, NUM_NONFINITE_UPDATES),
                    int(rows and not finite and first),
                    reduce="lifetime_sum",
                )
            if finite and rows:
                continue
            for ref in module_grads:
                grads.pop(ref, None)
                self._params[ref].grad = None
            if loss is None or not rows or not first:
                continue
            if here:  # the (averaged) gradients are finite: another learner's loss is not
                what = "loss on another learner"
            else:
                what = "loss" if not torch.isfinite(loss).all() else "gradients"
            logger.warning(
                "module %r: non-finite %s (loss %s); this update of the module is skipped and "
                "counted in num_nonfinite_updates. If it repeats, lower lr or mi_weight, or set "
                "grad_clip.",
                module_id, what, float(loss.detach()),
            )
        return grads

    def _make_modules_ddp_if_necessary(self) -> None:
        """Several learners: no DDP wrappers; rank 0's weights are broadcast once here, and
        `compute_gradients` averages every module's gradients over the learners.

        RLlib wraps each module in its own DDP, which all-reduces gradients from inside
        `backward()` in the order autograd happens to finish each module. That order
        followed the order of the modules in each learner's batch (allocator first or workers
        first, depending on the episodes a learner got), and two learners reducing different
        modules at once crashed gloo ("Received data size doesn't match expected size").
        DDP also fails a step in which any parameter got no gradient (the allocator net's
        unused value head; a MINE critic whose term is skipped).
        """
        if self.config.num_learners <= 1 or _world_size() < 2:
            return super()._make_modules_ddp_if_necessary()
        import torch.distributed as dist

        for module_id in sorted(self.module.keys(), key=str):
            for tensor in self.module[module_id].state_dict().values():
                dist.broadcast(tensor, src=0)

    def _uncompiled_update(self, batch: dict[str, Any], **kwargs: Any):
        if self.config.num_learners <= 1 or _world_size() < 2:
            return super()._uncompiled_update(batch, **kwargs)
        # RLlib's own step, without its `no_sync()` around the optimizer step, which only
        # DDP-wrapped modules have (see `_make_modules_ddp_if_necessary`).
        self._compute_off_policyness(batch)
        fwd_out = self.module.forward_train(batch)
        loss_per_module = self.compute_losses(fwd_out=fwd_out, batch=batch)
        gradients = self.compute_gradients(loss_per_module)
        self.apply_gradients(self.postprocess_gradients(gradients))
        return fwd_out, loss_per_module, {}

    def _make_batch_if_necessary(self, training_data):
        # The learner connector computes every row's value for GAE (RLlib's connector does it
        # with autograd on); nothing backpropagates through the batch.
        with torch.no_grad():
            return super()._make_batch_if_necessary(training_data)

    def _create_iterator_if_necessary(
        self,
        *,
        training_data,
        num_total_minibatches: int = 0,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        shuffle_batch_per_epoch: bool = False,
        **kwargs,
    ):
        if training_data.data_iterators or not minibatch_size:
            return super()._create_iterator_if_necessary(
                training_data=training_data,
                num_total_minibatches=num_total_minibatches,
                num_epochs=num_epochs,
                minibatch_size=minibatch_size,
                shuffle_batch_per_epoch=shuffle_batch_per_epoch,
                **kwargs,
            )
        batch = self._make_batch_if_necessary(training_data=training_data)
        for module_id in list(batch.policy_batches):
            if not self.should_module_be_updated(module_id, batch):
                del batch.policy_batches[module_id]
        if not batch.policy_batches:
            return {}
        batch = self._set_slicing_by_batch_id(batch, value=True)
        return ProportionalMiniBatchIterator(
            batch,
            num_epochs=num_epochs,
            minibatch_size=minibatch_size,
            shuffle=shuffle_batch_per_epoch,
            # Several learners: the count every learner takes (`rllib.sharding`).
            num_minibatches=(
                math.ceil(num_total_minibatches / num_epochs) if num_total_minibatches else None
            ),
        )
