"""Bring your own model and trainer: code the owner installed, pinned by the job, checked first.

A job's ``[code]`` table names a Python distribution (its name, version and a SHA-256 over its
installed files) and the model and trainer it provides, as ``"package.module:object"`` or as an
entry point of that distribution in group ``bulwark.models`` / ``bulwark.trainers``. Each party
(every data owner, and the coordinator, which builds the initial model) has installed the
distribution itself; before importing anything from it, :func:`verify_code` recomputes the
identity of what is installed and compares it with the job's pin, field by field. Then
:func:`load_object` imports only modules whose files belong to that distribution: a reference to
``os:system``, to another installed package, or to a module shadowing the distribution on
``sys.path`` is refused before it is imported. The coordinator never sends code; an owner runs
only code it installed and its job file approved.

The hash (:func:`distribution_sha256`) covers every file the distribution's ``RECORD`` lists
(its modules, data files, ``METADATA`` and ``entry_points.txt``, which decide what an entry point
runs), each as its path and the SHA-256 of its bytes, sorted by path. Left out are what differs
between two installs of the same wheel: compiled ``.pyc`` files, ``RECORD``, ``INSTALLER``,
``REQUESTED``, ``direct_url.json`` and files outside the installation folder (console-script
wrappers, which name the interpreter). An editable install (``pip install -e``) is refused: its
files are a pointer to a source tree that can change after the hash was taken.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import CodeSection, JobConfig
from .errors import ConfigError

if TYPE_CHECKING:
    from .data import ClientData
    from .models import ModelFactory
    from .types import Trainer

__all__ = [
    "MODEL_GROUP",
    "TRAINER_GROUP",
    "CodeIdentity",
    "TrainerFactory",
    "code_identity",
    "distribution_sha256",
    "job_model_factory",
    "job_trainer_factory",
    "load_object",
    "make_owner_trainer",
    "verify_code",
]

MODEL_GROUP = "bulwark.models"
"""Entry-point group of model factories."""

TRAINER_GROUP = "bulwark.trainers"
"""Entry-point group of trainer factories."""

_NOT_HASHED = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})

TrainerFactory = Callable[..., "Trainer"]
"""Called as ``factory(model_fn, data, task=..., seed=...)``, like
:meth:`fl_core.client.trainer.TorchTrainer.from_client_data`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeIdentity:
    """What is installed under a distribution name: the three values a job pins."""

    distribution: str
    version: str
    sha256: str

    def toml(self) -> str:
        """The ``[code]`` lines of a job file that pin this distribution."""
        return (
            f'[code]\ndistribution = "{self.distribution}"\nversion = "{self.version}"\n'
            f'sha256 = "{self.sha256}"\n'
        )


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(name: str) -> md.Distribution:
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise ConfigError(
            f"code.distribution = {name!r} is not installed here: install the version the job "
            "pins (pip install), then run again"
        ) from None
    direct = dist.read_text("direct_url.json")
    if direct:
        try:
            editable = bool(json.loads(direct).get("dir_info", {}).get("editable"))
        except (ValueError, AttributeError):
            editable = False
        if editable:
            raise ConfigError(
                f"code.distribution = {name!r} is an editable install: its code lives in a "
                "source tree the hash cannot cover; install it normally (pip install .)"
            )
    return dist


def _hashed_files(dist: md.Distribution) -> list[md.PackagePath]:
    files = dist.files
    if files is None:
        raise ConfigError(
            f"distribution {dist.metadata['Name']!r} lists no files (no RECORD): it cannot be "
            "pinned; install it with pip"
        )
    return sorted(
        (
            f
            for f in files
            if f.suffix != ".pyc"
            and "__pycache__" not in f.parts
            and ".." not in f.parts
            and not (f.parent.name.endswith(".dist-info") and f.name in _NOT_HASHED)
        ),
        key=lambda f: f.as_posix(),
    )


def distribution_sha256(dist: md.Distribution) -> str:
    """SHA-256 over the distribution's installed files (see the module docstring).

    Raises:
        ConfigError: a file the distribution lists is missing.
    """
    digest = hashlib.sha256()
    for f in _hashed_files(dist):
        try:
            data = Path(str(dist.locate_file(f))).read_bytes()
        except OSError:
            raise ConfigError(
                f"file {f.as_posix()} of distribution {dist.metadata['Name']!r} is missing: "
                "reinstall it"
            ) from None
        digest.update(f.as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def code_identity(distribution: str) -> CodeIdentity:
    """Name, version and file hash of what is installed as ``distribution``.

    Raises:
        ConfigError: not installed, installed in editable mode, or without a file list.
    """
    dist = _distribution(distribution)
    return CodeIdentity(
        distribution=dist.metadata["Name"],
        version=dist.version,
        sha256=distribution_sha256(dist),
    )


def verify_code(code: CodeSection) -> md.Distribution:
    """The installed distribution, after checking it is the one ``code`` pins.

    Raises:
        ConfigError: naming ``code.distribution``, ``code.version`` or ``code.sha256`` and both
            values when the installed code is not what the job pins.
    """
    dist = _distribution(code.distribution)
    installed = dist.version
    if installed != code.version:
        raise ConfigError(
            f"code.version = {code.version!r}, but {code.distribution} {installed} is installed "
            "here: install the pinned version, or refuse the job"
        )
    actual = distribution_sha256(dist)
    if actual != code.sha256:
        raise ConfigError(
            f"code.sha256 = {code.sha256[:16]}..., but the installed {code.distribution} "
            f"{installed} hashes to {actual[:16]}...: its files differ from the ones the job "
            "approved; nothing from it was imported"
        )
    return dist


def _module_files(dist: md.Distribution) -> set[Path]:
    return {
        Path(str(dist.locate_file(f))).resolve()
        for f in _hashed_files(dist)
        if f.suffix in (".py", ".so", ".pyd")
    }


def _import_within(dist: md.Distribution, module: str, where: str) -> Any:
    """Import ``module``, each package on its path checked to be a file of ``dist`` first."""
    allowed = _module_files(dist)
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot find module {name!r}: {exc}") from None
        origin = spec.origin if spec is not None else None
        if origin is None or Path(origin).resolve() not in allowed:
            raise ConfigError(
                f"{where}: module {name!r} is not a file of the pinned distribution "
                f"{dist.metadata['Name']!r} (found {origin or 'nothing'}); only its code is run"
            )
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - the owner's own code failed to import
        raise ConfigError(f"{where}: importing {module!r} failed: {exc}") from exc


def load_object(code: CodeSection, ref: str, *, group: str, where: str) -> Any:
    """The object ``ref`` names in the pinned distribution (verified first).

    Args:
        code: the job's ``[code]``.
        ref: ``"package.module:object"``, or the name of an entry point of the distribution in
            ``group``.
        group: :data:`MODEL_GROUP` or :data:`TRAINER_GROUP`.
        where: the job field, for messages (``"code.model"``).

    Raises:
        ConfigError: the installed code is not the pinned one, ``ref`` is outside it, or it
            does not exist.
    """
    dist = verify_code(code)
    if ":" not in ref:
        points = [ep for ep in dist.entry_points if ep.group == group and ep.name == ref]
        if not points:
            raise ConfigError(
                f"{where} = {ref!r}: {code.distribution} has no entry point {ref!r} in group "
                f"{group!r}"
            )
        ref = points[0].value.replace(" ", "")
    module, _, attr = ref.partition(":")
    obj = _import_within(dist, module, where)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{where}: {module!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{where}: {ref!r} is not callable")
    return obj


def job_model_factory(job: JobConfig) -> ModelFactory | None:
    """The job's own model factory (``code.model``), or ``None`` for a registry model."""
    if job.code is None or not job.code.model:
        return None
    factory: ModelFactory = load_object(
        job.code, job.code.model, group=MODEL_GROUP, where="code.model"
    )
    return factory


def job_trainer_factory(job: JobConfig) -> TrainerFactory | None:
    """The job's own trainer factory (``code.trainer``), or ``None`` for the torch trainer."""
    if job.code is None or not job.code.trainer:
        return None
    if job.dp.mode == "dpsgd":
        raise ConfigError(
            "code.trainer with dp.mode = 'dpsgd': DP-SGD needs the built-in trainer (Opacus "
            "clips and noises its per-example gradients); drop code.trainer"
        )
    factory: TrainerFactory = load_object(
        job.code, job.code.trainer, group=TRAINER_GROUP, where="code.trainer"
    )
    return factory


def make_owner_trainer(
    job: JobConfig,
    model_fn: Callable[[], Any],
    data: ClientData,
    *,
    task: str,
) -> Trainer:
    """The owner's trainer: its own ``code.trainer`` when the job names one, else torch's."""
    factory = job_trainer_factory(job)
    if factory is None:
        from .client.trainer import TorchTrainer

        return TorchTrainer.from_client_data(model_fn, data, task=task, seed=job.model.init_seed)
    trainer = factory(model_fn, data, task=task, seed=job.model.init_seed)
    for method in ("initial_weights", "fit", "evaluate"):
        if not callable(getattr(trainer, method, None)):
            raise ConfigError(f"code.trainer returned {type(trainer).__name__}, with no {method}()")
    return trainer
