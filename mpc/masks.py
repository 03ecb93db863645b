"""Self masks and pairwise masks: the single sign rule, masking and unmasking.

Bonawitz et al. CCS 2017, section 4 (round 2, MaskedInputCollection) and Bell et al. CCS 2020,
section 3: a client u that survived the key-sharing round sends

    y_u = x_u + PRG(k_u) + sum_{v in U2 and N(u)} sign(u, v) * PRG(k_uv)   (mod 2^bits)

where k_u is the self-mask key derived from its seed b_u, k_uv = k_vu the pairwise-mask key
derived from the X25519 agreement of u's and v's masking keys, and ``sign(u, v) = +1`` if u < v,
``-1`` otherwise. Summing over the survivors U3, every pair of survivors cancels; what remains is
sum x_u + sum_{u in U3} PRG(k_u) + the pairwise masks between survivors and clients that dropped
after sharing keys. The coordinator removes those with :func:`remove_masks` once it has
reconstructed the seeds b_u of survivors and the masking keys of the dropped clients.

Threat model: masks are only as good as their keys; see ``mpc.prg`` (AES-256-CTR, uniform on the
ring) and ``mpc.keys`` (HKDF with purpose labels and the session id as salt).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.errors import ParameterError
from mpc.prg import MaskExpander
from mpc.ring import MaskedVector, RingVector


def pairwise_sign(own: int, peer: int) -> int:
    """Return the sign with which client ``own`` adds the mask it shares with ``peer``.

    The single sign rule of the protocol (STYLE.md rule 5): +1 if ``own < peer``, -1 if
    ``own > peer``. Clients and the coordinator both call this function.

    Raises:
        ParameterError: if ``own == peer`` (a client shares no pairwise mask with itself).
    """
    if own == peer:
        raise ParameterError(f"no pairwise mask between client {own} and itself")
    return 1 if own < peer else -1


def apply_masks(
    vector: RingVector,
    *,
    index: int,
    self_key: bytes,
    pairwise_keys: Mapping[int, bytes],
    expander: MaskExpander,
) -> MaskedVector:
    """Return ``vector`` plus the self mask and the signed pairwise masks of client ``index``.

    Args:
        vector: the client's quantized input (not modified).
        index: the client's index.
        self_key: the 32-byte self-mask key.
        pairwise_keys: peer index -> 32-byte pairwise-mask key, for every neighbour that shared
            keys (U2 and N(index)).
        expander: the expander for this vector length and ring.

    Returns:
        The masked vector (a new array).
    """
    masked: npt.NDArray[Any] = np.empty_like(vector)
    masks = [(self_key, 1)] + [
        (key, pairwise_sign(index, peer)) for peer, key in pairwise_keys.items()
    ]
    expander.add_masks(masked, masks, source=vector)
    return MaskedVector(masked)


def remove_masks(
    total: npt.NDArray[Any],
    *,
    self_keys: Iterable[bytes],
    pairwise: Iterable[tuple[int, int, bytes]],
    expander: MaskExpander,
) -> None:
    """Remove self masks and the pairwise masks shared with dropped clients, in place.

    Args:
        total: the sum of the survivors' masked vectors; updated in place.
        self_keys: the self-mask key of every survivor whose vector is in ``total``.
        pairwise: (survivor, dropped, key) for every survivor and each of its neighbours that
            shared keys but did not send a masked vector; ``survivor`` added
            ``pairwise_sign(survivor, dropped) * PRG(key)``, which is subtracted here.
        expander: the expander for this vector length and ring.
    """
    expander.add_masks(total, ((key, -1) for key in self_keys))
    expander.add_masks(
        total, ((key, -pairwise_sign(survivor, dropped)) for survivor, dropped, key in pairwise)
    )
