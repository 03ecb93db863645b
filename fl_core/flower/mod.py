"""Bulwark's owner-side protections as a Flower client mod: :class:`OwnerMod`.

Threat model: the Flower server (ServerApp and SuperLink) may be malicious, as Bulwark's
coordinator may be. Flower's own client-side DP mods take their parameters from the server
(``fixedclipping_mod`` clips to the ``clipping_norm`` that the server puts in the fit config), so
a server that sends a huge norm receives the update unclipped. :class:`OwnerMod` follows
Bulwark's rule instead: every number it acts on comes from the owner's own pinned job file and
policy, and the server's fit instructions are only a claim.

What the mod does to a Flower app (``ClientApp(client_fn, mods=[OwnerMod(...)])``):

1. At construction, the owner's :class:`~fl_core.client.policy.OwnerPolicy` checks the job it
   agreed to (purpose, protections, number of rounds); a job the owner refuses raises
   :class:`~fl_core.errors.PolicyRefused` before any Flower message is answered.
2. On every message: evaluation is answered only if the policy allows it; a fit is answered at
   most ``job.rounds`` times (and at most ``policy.max_rounds``), counted by the owner itself in
   the node's state (the server's ``server-round`` is not trusted).
3. With ``[dp] mode = "central"`` in the owner's job: the owner computes its
   :class:`~fl_core.dp.plan.DPPlan` (the clip C and the noise multiplier z calibrated to
   ``dp.epsilon`` over ``job.rounds``), clips ``update = new - global`` to C, **charges its
   privacy ledger first** (refusing the fit when the cap would be exceeded), then adds
   N(0, (z C)^2) to every coordinate from the OS CSPRNG (AES-CTR stream seeded by
   ``os.urandom``) and sends ``global + noised update`` with weight 1 (an example count is data
   too). Because the Flower server is not trusted with the noise, the owner adds all of it
   itself: each release is (epsilon, delta)-DP at the client level on its own, against the
   server and without secure aggregation. The price is noise sqrt(n) times larger on the
   average of n clients than central DP's.

Secure aggregation with Bulwark's ``mpc`` through a Flower workflow is not part of this mod
(see ``docs/flower.md``); run such jobs on Bulwark's coordinator with
:class:`fl_core.flower.NumPyClientTrainer`.

Messages are Flower's legacy fit/evaluate records (``flwr.compat``), which ``ServerApp`` with a
``Strategy`` and Flower's ``DefaultWorkflow`` send; a message that is not one is refused. Placed
before Flower's ``secaggplus_mod`` the mod therefore refuses SecAgg+'s stage messages; placed
after it (``mods=[secaggplus_mod, OwnerMod(...)]``) it would see the fit that SecAgg+ masks, a
combination that is not tested here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..client.policy import OwnerPolicy
from ..config import JobConfig
from ..dp.central import add_central_noise
from ..dp.clipping import clip_update
from ..dp.noise import csprng
from ..dp.owner import OwnerPrivacy
from ..dp.plan import DPPlan, make_plan
from ..errors import ConfigError, FlCoreError, PolicyRefused

if TYPE_CHECKING:
    from flwr.app import Context, Message

__all__ = ["DP_MODES", "RELEASES_KEY", "OwnerMod"]

DP_MODES = ("none", "central")
"""``dp.mode`` values the mod supports (``central``: the owner adds the noise itself)."""

RELEASES_KEY = "bulwark.owner"
"""The node-state record where the mod counts the fits it answered."""

LedgerFor = Callable[["Context"], str | Path]
"""The ledger file of the node a message is for (one mod object may serve many simulated nodes)."""


class OwnerMod:
    """Bulwark's owner checks, ledger charge and client-level DP, as a Flower client mod.

    Args:
        job: the job file the owner agreed to (its own pinned copy): rounds, ``[dp]``.
        policy: the owner's rules (none when omitted).
        ledger: the owner's privacy-ledger file, or a function of the Flower ``Context`` that
            returns it (for simulations where one ClientApp serves many owners). Needed when
            the job spends privacy budget.
        dataset: the ledger's name for the owner's data (default: the job's data set).
        rng: makes the noise generator of one release (default :func:`fl_core.dp.noise.csprng`,
            a fresh AES-CTR stream keyed from ``os.urandom``); tests may fix it.

    Raises:
        PolicyRefused: the owner's policy refuses the job.
        ConfigError: the job's ``dp.mode`` is not one of :data:`DP_MODES`, or it spends privacy
            budget and no ledger is given.
    """

    def __init__(
        self,
        *,
        job: JobConfig,
        policy: OwnerPolicy | None = None,
        ledger: str | Path | LedgerFor | None = None,
        dataset: str | None = None,
        rng: Callable[[], np.random.Generator] = csprng,
    ) -> None:
        if job.job.kind != "train":
            raise ConfigError(f"job.kind = {job.job.kind!r}; the Flower mod runs training jobs")
        if job.dp.mode not in DP_MODES:
            raise ConfigError(
                f"dp.mode = {job.dp.mode!r} is not supported by the Flower mod; allowed: "
                f"{list(DP_MODES)} (distributed DP needs Bulwark's secure aggregation)"
            )
        if job.dp.mode != "none" and ledger is None:
            raise ConfigError("the job spends privacy budget: the owner needs a ledger file")
        self.job = job
        self.policy = policy or OwnerPolicy()
        self.policy.check_job(job)
        self._ledger = ledger
        self._dataset = dataset or job.data.dataset
        self._rng = rng
        # central mode's plan does not depend on the model's size (dim only matters for Skellam)
        self._plan: DPPlan | None = make_plan(job, dim=1) if job.dp.mode != "none" else None
        self._privacy: dict[Path, OwnerPrivacy] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Flower's simulation ships the app to its workers) without the ledger cache."""
        state = dict(self.__dict__)
        state["_privacy"] = {}  # ledger connections belong to the process that opened them
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def plan(self) -> DPPlan | None:
        """The owner's DP plan (``None`` without DP)."""
        return self._plan

    def __call__(self, msg: Message, ctxt: Context, call_next: Callable[..., Message]) -> Message:
        """Answer ``msg`` through the app (``call_next``) if the owner's rules allow it."""
        from flwr.app import MessageType

        try:
            if msg.metadata.message_type == MessageType.EVALUATE:
                if not self.policy.allow_evaluation:
                    raise PolicyRefused("the owner does not take part in evaluation")
                return call_next(msg, ctxt)
            if msg.metadata.message_type != MessageType.TRAIN:
                return call_next(msg, ctxt)
            return self._fit(msg, ctxt, call_next)
        except FlCoreError as exc:
            return _refusal(msg, exc)

    def _fit(self, msg: Message, ctxt: Context, call_next: Callable[..., Message]) -> Message:
        import flwr.compat.common.recorddict_compat as compat
        from flwr.app import ConfigRecord
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

        state = ctxt.state.config_records.setdefault(RELEASES_KEY, ConfigRecord({}))
        done = state.get("releases", 0)
        if isinstance(done, bool) or not isinstance(done, int) or done < 0:
            raise ConfigError(f"node state {RELEASES_KEY}.releases is {done!r}, not a count")
        release = done + 1
        if release > self.job.job.rounds:
            raise PolicyRefused(
                f"fit number {release}: the job agreed to {self.job.job.rounds} rounds"
            )
        self.policy.check_task(self.job, stage="fit", round=release)
        try:
            fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            received = parameters_to_ndarrays(fit_ins.parameters)
        except (KeyError, TypeError, ValueError) as exc:  # not a legacy fit instruction
            raise ConfigError(f"the server's fit message cannot be read: {exc!r}") from exc
        start = _floats(received, "the server's parameters")
        out_msg = call_next(msg, ctxt)
        if out_msg.has_error():
            return out_msg
        fit_res = compat.recorddict_to_fitres(out_msg.content, keep_input=True)
        new = _floats(parameters_to_ndarrays(fit_res.parameters), "the app's parameters")
        if [a.shape for a in new] != [a.shape for a in start]:
            raise ConfigError("the app returned parameters of other shapes than it was sent")
        plan = self._plan
        metrics = dict(fit_res.metrics)
        if plan is not None:
            released, epsilon, norm = self._privatize(start, new, plan, ctxt, release)
            fit_res.parameters = ndarrays_to_parameters(released)
            fit_res.num_examples = 1  # uniform weights: the example count is data too
            metrics.update({"epsilon": epsilon, "update_norm": norm})
        fit_res.metrics = metrics
        state["releases"] = release
        out_msg.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
        return out_msg

    def _privatize(
        self,
        start: list[npt.NDArray[np.float32]],
        new: list[npt.NDArray[np.float32]],
        plan: DPPlan,
        ctxt: Context,
        release: int,
    ) -> tuple[list[npt.NDArray[np.float32]], float, float]:
        """Clip, charge the ledger, then noise: returns (released parameters, epsilon, norm)."""
        flat_start = np.concatenate([a.reshape(-1) for a in start]).astype(np.float32)
        flat_new = np.concatenate([a.reshape(-1) for a in new]).astype(np.float32)
        update = (flat_new.astype(np.float64) - flat_start).astype(np.float32)
        clipped, norm = clip_update(update, clip=plan.clip)
        path = Path(self._ledger(ctxt) if callable(self._ledger) else self._ledger or "")
        privacy = self._privacy.get(path)
        if privacy is None:  # one per ledger file: it keeps one connection per thread
            privacy = OwnerPrivacy(
                job_id=self.job.job.name, plan=plan, ledger_path=path, dataset=self._dataset
            )
            self._privacy[path] = privacy
        epsilon = privacy.charge(round=release, event=plan.owner_event())  # before it leaves
        noised = add_central_noise(
            clipped, clip=plan.clip, noise_multiplier=plan.noise_multiplier, rng=self._rng()
        )
        flat = (flat_start.astype(np.float64) + noised).astype(np.float32)
        out, offset = [], 0
        for array in start:
            out.append(flat[offset : offset + array.size].reshape(array.shape))
            offset += array.size
        return out, epsilon, norm


def _floats(arrays: list[npt.NDArray[Any]], what: str) -> list[npt.NDArray[np.float32]]:
    """Real-valued, finite arrays as float32 (anything else is refused, naming ``what``)."""
    out = []
    for i, array in enumerate(arrays):
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ConfigError(f"{what}: array {i} has dtype {array.dtype}, not real numbers")
        value = array.astype(np.float32)
        if not bool(np.isfinite(value).all()):
            raise ConfigError(f"{what}: array {i} has NaN or infinite values")
        out.append(value)
    return out


def _refusal(msg: Message, exc: FlCoreError) -> Message:
    """A Flower error reply that carries the owner's reason (nothing else leaves)."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    return Message(
        Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"{type(exc).__name__}: {exc}"),
        reply_to=msg,
    )
