"""The owner's own model and trainer: pinned by the job, checked before anything is imported."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from app_support import install_clinic_model

from fl_core.app import (
    MODEL_GROUP,
    TRAINER_GROUP,
    code_identity,
    load_object,
    make_owner_trainer,
    verify_code,
)
from fl_core.config import CodeSection, parse_job
from fl_core.data import ClientData
from fl_core.errors import ConfigError
from fl_core.types import FitConfig


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_clinic_model(tmp_path_factory.mktemp("clinic"))


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(installed))
    yield installed
    for name in [m for m in sys.modules if m == "clinic_model" or m.startswith("clinic_model.")]:
        del sys.modules[name]


def _pin(site: Path, **change: str) -> CodeSection:
    assert str(site) in sys.path
    identity = code_identity("clinic-model")
    fields = {
        "distribution": identity.distribution,
        "version": identity.version,
        "sha256": identity.sha256,
        "model": "mlp",
        "trainer": "clinic_model.train:weighted_trainer",
        **change,
    }
    return CodeSection(**fields)


def test_the_pin_is_the_same_for_two_installs_of_the_same_release(
    on_path: Path, tmp_path: Path
) -> None:
    first = code_identity("clinic-model")
    load_object(_pin(on_path), "mlp", group=MODEL_GROUP, where="code.model")  # writes .pyc
    second_site = install_clinic_model(tmp_path)

    sys.path.insert(0, str(second_site))
    try:
        second = code_identity("clinic-model")
    finally:
        sys.path.remove(str(second_site))

    assert first.distribution == "clinic-model" and first.version == "0.1.0"
    assert first == second and len(first.sha256) == 64  # paths and .pyc never enter the hash
    assert code_identity("clinic-model") == first


def test_a_model_by_entry_point_and_a_trainer_by_path_train(on_path: Path) -> None:
    code = _pin(on_path)
    factory = load_object(code, code.model, group=MODEL_GROUP, where="code.model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0.8).astype(np.int64)  # imbalanced: the weighted loss matters
    data = ClientData(x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    job = parse_job(
        '[job]\nname = "c"\n[data]\ndataset = "clinic"\n[model]\ninput_shape = [5]\n'
        f"num_classes = 2\n{code_identity('clinic-model').toml()}"
        'model = "mlp"\ntrainer = "weighted"\n'
    )

    trainer = make_owner_trainer(
        job, lambda: factory(input_shape=(5,), num_classes=2), data, task="classification"
    )
    start = trainer.initial_weights()
    fitted = trainer.fit(start, FitConfig(round=1, epochs=3, batch_size=8, learning_rate=0.1))
    result = trainer.evaluate(fitted.weights)

    assert type(trainer).__name__ == "WeightedTrainer"
    assert set(start) == {"hidden.weight", "hidden.bias", "out.weight", "out.bias"}
    assert not np.array_equal(start["out.weight"], fitted.weights["out.weight"])
    assert result.num_examples == 10 and 0.0 <= float(result.metrics["accuracy"]) <= 1.0
    assert load_object(code, "weighted", group=TRAINER_GROUP, where="code.trainer")


def test_a_changed_release_is_refused_naming_the_field(on_path: Path, tmp_path: Path) -> None:
    pinned = _pin(on_path)
    changed = install_clinic_model(tmp_path, edit="\nimport os  # a changed release\n")
    sys.path.insert(0, str(changed))
    try:
        with pytest.raises(ConfigError, match=r"code\.sha256 = .* hashes to .*nothing from it"):
            verify_code(pinned)
    finally:
        sys.path.remove(str(changed))
    with pytest.raises(ConfigError, match=r"code\.version = '0\.2\.0', but clinic-model 0\.1\.0"):
        verify_code(_pin(on_path, version="0.2.0"))


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("os:system", "module 'os' is not a file of the pinned distribution"),
        ("fl_core.models:Mlp", "module 'fl_core' is not a file of the pinned distribution"),
        ("no-such-model", "has no entry point 'no-such-model' in group 'bulwark.models'"),
        ("clinic_model.model:Missing", "has no attribute 'Missing'"),
    ],
)
def test_only_code_of_the_pinned_distribution_is_run(on_path: Path, ref: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_object(_pin(on_path), ref, group=MODEL_GROUP, where="code.model")


def test_an_editable_install_and_a_missing_package_are_refused(
    on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install_clinic_model(tmp_path)
    (next(site.glob("*.dist-info")) / "direct_url.json").write_text(
        json.dumps({"url": "file:///src", "dir_info": {"editable": True}})
    )
    monkeypatch.syspath_prepend(str(site))

    with pytest.raises(ConfigError, match="editable install"):
        code_identity("clinic-model")
    with pytest.raises(ConfigError, match="'no-such-dist' is not installed here"):
        code_identity("no-such-dist")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[model]\nname = "mlp"\ninput_shape = [5]\nnum_classes = 2\n'
         '[code]\ndistribution = "d"\nversion = "1"\nsha256 = "' + "0" * 64 + '"\nmodel = "m"\n',
         "give one of them"),
        ('[model]\ninput_shape = [5]\nnum_classes = 2\n', "model.name is required"),
        ('[model]\ninput_shape = [5]\nnum_classes = 2\n'
         '[code]\ndistribution = "d"\nversion = "1"\nsha256 = "abc"\nmodel = "m"\n',
         "code.sha256"),
        ('[model]\ninput_shape = [4]\nnum_classes = 2\n[code]\ndistribution = "d"\n'
         'version = "1"\nsha256 = "' + "0" * 64 + '"\nmodel = "m"\n'
         '[schema]\nfeatures = ["a", "b", "c", "d", "e"]\nlabel = "y"\n', "model.input_shape"),
        ('[model]\nname = "mlp"\n[schema]\nfeatures = ["a"]\nlabel = "a"\n', "schema.label"),
    ],
)  # fmt: skip
def test_job_files_with_code_and_schema_are_checked(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_job('[job]\nname = "c"\n[data]\ndataset = "clinic"\n' + extra)
