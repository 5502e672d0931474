"""Keras checkpoints written by the real package, for ``tests/test_keras.py`` (dev-only).

Run once in a separate environment (Keras 3 on the torch backend); the outputs are committed
under ``tests/data/formats/keras/``:

    python3 -m venv /tmp/genkeras && /tmp/genkeras/bin/pip install torch==2.13.0 keras h5py numpy
    KERAS_BACKEND=torch /tmp/genkeras/bin/python scripts/checkpoint_formats/make_keras.py

Small Keras MLPs in float64 (``keras.config.set_floatx("float64")``) with random biases:

* ``mlp``: Sequential Dense 5→7→6→3, relu, as ``mlp.weights.h5`` (``save_weights``),
  ``mlp.keras`` and ``mlp.h5`` (``model.save``, the legacy HDF5 format);
* ``bn``: Dense → BatchNormalization(epsilon=0.01) → relu twice, then Dense; the statistics,
  γ and β are set to random values; as ``bn.keras`` and ``bn.weights.h5``;
* ``nobias``: ``use_bias=False`` and BatchNormalization(center=False) (γ but no β), as
  ``nobias.keras``;
* ``leaky``: a Functional model with LeakyReLU(negative_slope=0.1) layers and a Dropout, as
  ``leaky.keras``;
* ``softmax``: relu6 hidden layers and a softmax output, as ``softmax.keras``;
* ``pgdl``: the layout of the PGDL competition (NeurIPS 2020): ``pgdl/model_3/config.json``
  (``{"model_config": [{"layer_name": ..., **kwargs}, ...], "input_shape": [...]}``) and
  ``pgdl/model_3/weights.hdf5`` written as Keras 2.4 ``save_weights`` writes HDF5 (byte-string
  ``layer_names``, ``weight_names`` like ``dense/kernel:0``), beside the task's
  ``pgdl/model_configs.json`` with the model's hyper-parameters. Keras 3 loads it back before
  it is kept.

``<name>.npz`` holds float64 inputs ``x`` and Keras's own float64 outputs ``y`` (for
``softmax``: ``y`` are the logits, from a copy of the model with a linear output layer, and
``probs`` the softmax model's outputs). Keras 3's type promotion turns float64 into float32 on
every backend but TensorFlow (as JAX does by default), so that a float64 model's matmuls run in
float32; the script lifts that mapping (``BIT64_TO_BIT32_DTYPE``), as the TensorFlow backend
has it, so that Keras computes in float64 and the tests can compare to 1e-10.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from keras.src.backend.common import dtypes  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "formats" / "keras"
RNG = np.random.default_rng(20201206)


def dense(units: int, **kwargs: object) -> layers.Dense:
    kwargs.setdefault("bias_initializer", keras.initializers.RandomNormal(stddev=0.5))
    return layers.Dense(units, **kwargs)


def randomise_batchnorm(model: keras.Model) -> None:
    """Random γ, β and running statistics (variance in [0.5, 2]) for every BatchNormalization."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            values = []
            for w in layer.weights:
                size = w.shape[0]
                if "variance" in w.path:
                    values.append(RNG.uniform(0.5, 2.0, size))
                elif "gamma" in w.path:
                    values.append(RNG.uniform(0.5, 1.5, size))
                else:
                    values.append(RNG.normal(0.0, 0.5, size))
            layer.set_weights(values)


def save_outputs(name: str, model: keras.Model, x: np.ndarray, **extra: np.ndarray) -> None:
    y = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
    np.savez(OUT / f"{name}.npz", x=x, y=y, **extra)


def deflate(path: Path) -> None:
    """Rewrite a .keras archive with deflate-compressed members (Keras stores them)."""
    with zipfile.ZipFile(path) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for filename, data in members:
            z.writestr(filename, data)


def save_keras(model: keras.Model, name: str) -> None:
    model.save(OUT / f"{name}.keras")
    deflate(OUT / f"{name}.keras")


def inputs(n: int = 12, d: int = 5) -> np.ndarray:
    return RNG.normal(size=(n, d))


def make_mlp() -> None:
    model = keras.Sequential(
        [keras.Input((5,)), dense(7, activation="relu"), dense(6, activation="relu"), dense(3)]
    )
    model.save_weights(OUT / "mlp.weights.h5")
    save_keras(model, "mlp")
    model.save(OUT / "mlp.h5")
    save_outputs("mlp", model, inputs())


def make_bn() -> None:
    model = keras.Sequential(
        [
            keras.Input((5,)),
            dense(7),
            layers.BatchNormalization(epsilon=0.01),
            layers.Activation("relu"),
            dense(6),
            layers.BatchNormalization(epsilon=0.01),
            layers.ReLU(),
            dense(3),
        ]
    )
    randomise_batchnorm(model)
    save_keras(model, "bn")
    model.save_weights(OUT / "bn.weights.h5")
    save_outputs("bn", model, inputs())


def make_nobias() -> None:
    model = keras.Sequential(
        [
            keras.Input((5,)),
            dense(7, use_bias=False),
            layers.BatchNormalization(center=False),
            layers.ReLU(),
            dense(3, use_bias=False),
        ]
    )
    randomise_batchnorm(model)
    save_keras(model, "nobias")
    save_outputs("nobias", model, inputs())


def make_leaky() -> None:
    x = keras.Input((5,))
    h = layers.LeakyReLU(negative_slope=0.1)(dense(7, name="hidden_a")(x))
    h = layers.Dropout(0.3)(h)
    h = layers.LeakyReLU(negative_slope=0.1)(dense(6, name="hidden_b")(h))
    model = keras.Model(x, dense(3, name="logits")(h))
    save_keras(model, "leaky")
    save_outputs("leaky", model, inputs())


def make_softmax() -> None:
    def build(last: str) -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((5,)),
                dense(7, activation="relu6"),
                dense(6, activation="relu6"),
                dense(3, activation=last),
            ]
        )

    model, linear = build("softmax"), build("linear")
    linear.set_weights(model.get_weights())
    x = inputs() * 4
    save_keras(model, "softmax")
    probs = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
    save_outputs("softmax", linear, x, probs=probs)


def write_keras2_weights(model: keras.Model, path: Path) -> None:
    """The HDF5 file Keras 2.4's ``save_weights`` writes (as the PGDL models have it)."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.4.0"
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.path.rsplit('/', 1)[-1]}:0" for w in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, w in zip(names, layer.weights, strict=True):
                group.create_dataset(n, data=np.asarray(w.numpy()))


def make_pgdl() -> None:
    model_config = [
        {"layer_name": "Flatten"},
        {"layer_name": "Dense", "units": 7},
        {"layer_name": "BatchNormalization"},
        {"layer_name": "Activation", "activation": "relu"},
        {"layer_name": "Dropout", "rate": 0.1},
        {"layer_name": "Dense", "units": 6, "activation": "relu"},
        {"layer_name": "Dense", "units": 3},
    ]

    def build() -> keras.Sequential:
        built = [
            getattr(layers, d["layer_name"])(**{k: v for k, v in d.items() if k != "layer_name"})
            for d in model_config
        ]
        for layer in built:
            if isinstance(layer, layers.Dense):
                layer.bias_initializer = keras.initializers.RandomNormal(stddev=0.5)
        model = keras.Sequential([keras.Input((5,)), *built])
        return model

    model = build()
    randomise_batchnorm(model)
    directory = OUT / "pgdl" / "model_3"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps({"model_config": model_config, "input_shape": [5]}, indent=2)
    )
    write_keras2_weights(model, directory / "weights.hdf5")
    x = inputs()
    check = build()
    check.load_weights(directory / "weights.hdf5")
    assert np.array_equal(keras.ops.convert_to_numpy(check(x)), keras.ops.convert_to_numpy(model(x))), (
        "Keras reads the file back differently"
    )
    hparams = {
        "num_units": {"possible_values": [7, 14], "current_value": 7},
        "dropout": {"possible_values": [0.0, 0.1], "current_value": 0.1},
        "batchnorm": {"possible_values": [False, True], "current_value": True},
    }
    configs = {"3": {"hparams": hparams, "metrics": {"train_acc": 0.91, "test_acc": 0.87}}}
    (OUT / "pgdl" / "model_configs.json").write_text(json.dumps(configs, indent=2))
    save_outputs("pgdl", model, x)


def main() -> None:
    dtypes.BIT64_TO_BIT32_DTYPE.pop("float64", None)  # float64 stays float64 (see above)
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for make in (make_mlp, make_bn, make_nobias, make_leaky, make_softmax, make_pgdl):
        keras.backend.clear_session()  # layer names start again at dense, dense_1, ...
        make()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
