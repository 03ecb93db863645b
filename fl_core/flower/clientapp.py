"""A Flower ``ClientApp`` as a Bulwark data owner: :func:`client_app_trainer`.

A ``ClientApp`` built from a ``client_fn`` (with its mods, if any) answers Flower's legacy
``get_parameters``, ``train`` and ``evaluate`` messages. :class:`ClientAppClient` sends it those
messages in process, the way a SuperNode would, and offers the result as a ``NumPyClient``-shaped
object; :func:`client_app_trainer` wraps that in :class:`~fl_core.flower.NumPyClientTrainer`, so
every return is checked as for a ``NumPyClient``. The app keeps one Flower ``Context`` across
calls (its node state persists, as on a SuperNode).

An error reply from the app, or an exception it raises (a mod that refused, a ``client_fn`` that
failed), raises
:class:`~fl_core.errors.PolicyRefused` for a mod's refusal (``MOD_FAILED_PRECONDITION``) and
:class:`~fl_core.errors.ConfigError` otherwise, with Flower's reason; nothing is sent then.
Message-API apps (``@app.train()`` handlers on ``ArrayRecord``) are not handled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from ..errors import ConfigError, FlCoreError, PolicyRefused
from .adapter import NumPyClientTrainer

if TYPE_CHECKING:
    from flwr.app import Message, RecordDict
    from flwr.clientapp import ClientApp

__all__ = ["ClientAppClient", "client_app_trainer"]

Scalar = bool | bytes | float | int | str
UserValue = float | int | str
"""A value of Flower's node or run config (``UserConfigValue``)."""


class ClientAppClient:
    """Calls a legacy Flower ``ClientApp`` in process, as ``NumPyClient`` methods.

    Args:
        app: the ``ClientApp``.
        node_config: the node's config (what ``client_fn`` reads, e.g. ``partition-id``).
        run_config: the run's config (``context.run_config``).
        node_id: the node id the app sees.
    """

    def __init__(
        self,
        app: ClientApp,
        *,
        node_config: Mapping[str, UserValue] | None = None,
        run_config: Mapping[str, UserValue] | None = None,
        node_id: int = 1,
    ) -> None:
        from flwr.app import Context, RecordDict

        self._app = app
        self._node_id = node_id
        self._context = Context(
            run_id=0,
            node_id=node_id,
            node_config=dict(node_config or {}),
            state=RecordDict(),
            run_config=dict(run_config or {}),
        )

    def get_parameters(self, config: dict[str, Scalar]) -> list[npt.NDArray[Any]]:
        """The app's ``get_parameters`` answer."""
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import GetParametersIns, parameters_to_ndarrays
        from flwr.common.constant import MessageTypeLegacy

        content = compat.getparametersins_to_recorddict(GetParametersIns(config=dict(config)))
        reply = self._call(content, MessageTypeLegacy.GET_PARAMETERS)
        res = compat.recorddict_to_getparametersres(reply, keep_input=False)
        return list(parameters_to_ndarrays(res.parameters))

    def fit(
        self, parameters: list[npt.NDArray[Any]], config: dict[str, Scalar]
    ) -> tuple[list[npt.NDArray[Any]], int, dict[str, Any]]:
        """The app's ``train`` answer: (parameters, num_examples, metrics)."""
        import flwr.compat.common.recorddict_compat as compat
        from flwr.app import MessageType
        from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

        ins = FitIns(parameters=ndarrays_to_parameters(parameters), config=dict(config))
        reply = self._call(compat.fitins_to_recorddict(ins, keep_input=False), MessageType.TRAIN)
        res = compat.recorddict_to_fitres(reply, keep_input=False)
        return list(parameters_to_ndarrays(res.parameters)), res.num_examples, dict(res.metrics)

    def evaluate(
        self, parameters: list[npt.NDArray[Any]], config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Any]]:
        """The app's ``evaluate`` answer: (loss, num_examples, metrics)."""
        import flwr.compat.common.recorddict_compat as compat
        from flwr.app import MessageType
        from flwr.common import EvaluateIns, ndarrays_to_parameters

        ins = EvaluateIns(parameters=ndarrays_to_parameters(parameters), config=dict(config))
        content = compat.evaluateins_to_recorddict(ins, keep_input=False)
        res = compat.recorddict_to_evaluateres(self._call(content, MessageType.EVALUATE))
        return res.loss, res.num_examples, dict(res.metrics)

    def _call(self, content: RecordDict, message_type: str) -> RecordDict:
        from flwr.app import Message, Metadata
        from flwr.common.constant import ErrorCode

        metadata = Metadata(
            run_id=0,
            message_id=f"bulwark-{time.monotonic_ns()}",
            src_node_id=0,
            dst_node_id=self._node_id,
            reply_to_message_id="",
            group_id="",
            created_at=time.time(),
            ttl=3600.0,
            message_type=message_type,
        )
        # Flower's own constructor with the metadata set (as a SuperNode receives a message), so
        # that nothing depends on Flower's process-wide TaskIdentity.
        message = Message(content, metadata=metadata)  # type: ignore[call-overload]
        try:
            reply: Message = self._app(message, self._context)
        except FlCoreError:
            raise
        except Exception as exc:  # the app's own code failed (a SuperNode reports it likewise)
            raise ConfigError(
                f"the ClientApp answered {message_type} with an error: {type(exc).__name__}: {exc}"
            ) from exc
        if reply.has_error():
            reason = f"the ClientApp answered {message_type} with an error: {reply.error.reason}"
            if reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION:
                raise PolicyRefused(reason)
            raise ConfigError(reason)
        return reply.content


def client_app_trainer(
    app: ClientApp,
    *,
    node_config: Mapping[str, UserValue] | None = None,
    run_config: Mapping[str, UserValue] | None = None,
    names: Sequence[str] | None = None,
    config: Mapping[str, Scalar] | None = None,
) -> NumPyClientTrainer:
    """A Bulwark :class:`~fl_core.types.Trainer` that runs a legacy Flower ``ClientApp``.

    Args:
        app: the ``ClientApp`` (``ClientApp(client_fn=..., mods=[...])``).
        node_config: the node's config its ``client_fn`` reads (e.g. ``{"partition-id": 3}``).
        run_config: the run's config.
        names: parameter names (see :class:`~fl_core.flower.NumPyClientTrainer`).
        config: extra Flower config entries of every call.
    """
    client = ClientAppClient(app, node_config=node_config, run_config=run_config)
    return NumPyClientTrainer(client, names=names, config=config)
