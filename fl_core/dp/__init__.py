"""Differential privacy: clipping, CSPRNG noise, Skellam distributed DP, accounting, audit.

DP-SGD through Opacus lives in :mod:`fl_core.dp.dpsgd` (``DPSGDSession``, ``DPSGDConfig``,
``ClippingMode``, ``clipped_gradient_sum``); it is not re-exported here so that importing
``fl_core.dp`` does not load torch and Opacus.
"""

from fl_core.dp.accounting import (
    ORDERS,
    EpsilonReport,
    GaussianEvent,
    PrivacyEvent,
    SkellamEvent,
    compose,
    dpsgd_epsilon,
    epsilon_pld,
    epsilon_rdp,
    event_from_dict,
    event_to_dict,
    noise_multiplier_for,
    rdp_to_delta,
    rdp_to_epsilon,
)
from fl_core.dp.audit import AuditResult, audit_mechanism, audit_scores, clopper_pearson_upper
from fl_core.dp.central import add_central_noise, gaussian_sum
from fl_core.dp.clipping import clip_update
from fl_core.dp.noise import csprng, gaussian_noise, skellam_noise
from fl_core.dp.sampling import poisson_indices, poisson_sample
from fl_core.dp.skellam import (
    PrivacyUnit,
    SkellamConfig,
    calibrate_skellam,
    new_rotation_seed,
    skellam_decode,
    skellam_encode,
    skellam_epsilon,
    skellam_round_event,
)

__all__ = [
    "ORDERS",
    "AuditResult",
    "EpsilonReport",
    "GaussianEvent",
    "PrivacyEvent",
    "PrivacyUnit",
    "SkellamConfig",
    "SkellamEvent",
    "add_central_noise",
    "audit_mechanism",
    "audit_scores",
    "calibrate_skellam",
    "clip_update",
    "clopper_pearson_upper",
    "compose",
    "csprng",
    "dpsgd_epsilon",
    "epsilon_pld",
    "epsilon_rdp",
    "event_from_dict",
    "event_to_dict",
    "gaussian_noise",
    "gaussian_sum",
    "new_rotation_seed",
    "noise_multiplier_for",
    "poisson_indices",
    "poisson_sample",
    "rdp_to_delta",
    "rdp_to_epsilon",
    "skellam_decode",
    "skellam_encode",
    "skellam_epsilon",
    "skellam_noise",
    "skellam_round_event",
]
