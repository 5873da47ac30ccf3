"""shap 0.51's own TensorFlow DeepExplainer tests (tests/explainers/test_deep.py), run against tfshap.

Ported with ``shap.DeepExplainer`` replaced by ``tfshap.DeepExplainer`` and ``tf.keras`` by
each Keras in turn (``K``); every assertion is kept. Where shap's file skips a test on
current TensorFlow, the port runs it (noted at the test). Data that shap downloads (IMDB) is
generated instead. shap's tests are MIT-licensed (Copyright (c) 2018 Scott Lundberg).
"""

from __future__ import annotations

import numpy as np
import pytest
from models._helpers import keras_module

import tfshap

KERASES = ["tf_keras", "keras3"]


@pytest.fixture(params=KERASES)
def K(request):
    return keras_module(request.param)


@pytest.fixture
def random_seed():
    return 0


def _seed(K, random_seed):
    K.utils.set_random_seed(random_seed)


def test_tf_eager_call(K, random_seed):
    """This is a basic eager example from keras (shap skips it on TensorFlow >= 2.4)."""
    pd = pytest.importorskip("pandas")
    _seed(K, random_seed)
    rs = np.random.RandomState(random_seed)

    x = pd.DataFrame({"B": rs.random(size=(100,))})
    y = x.B
    y = y.map(lambda zz: chr(int(zz * 2 + 65))).str.get_dummies()

    model = K.models.Sequential()
    model.add(K.layers.Input(shape=(x.shape[1],)))
    model.add(K.layers.Dense(10, activation="relu"))
    model.add(K.layers.Dense(y.shape[1], activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="Adam")
    model.fit(x.values, y.values, epochs=2, verbose=0)

    e = tfshap.DeepExplainer(model, x.values[:1])
    sv = e.shap_values(x.values)
    sv_call = e(x.values)
    np.testing.assert_array_almost_equal(sv, sv_call.values, decimal=8)
    # shap's assertion, written for its old list-per-output layout (sv[0] was output 0), in the
    # layout shap 0.51 returns: output 0 of every sample
    assert np.abs(e.expected_value[0] + sv[..., 0].sum(-1) - np.asarray(model(x.values))[:, 0]).max() < 1e-4


def test_tf_keras_mnist_cnn_call(K, random_seed):
    """This is the basic mnist cnn example from keras."""
    _seed(K, random_seed)
    rs = np.random.RandomState(random_seed)
    batch_size = 64
    num_classes = 10
    epochs = 1
    img_rows, img_cols = 28, 28
    x_train = rs.randn(200, 28, 28)
    y_train = rs.randint(0, 9, 200)
    x_test = rs.randn(200, 28, 28)
    y_test = rs.randint(0, 9, 200)
    x_train = x_train.reshape(x_train.shape[0], img_rows, img_cols, 1)
    x_test = x_test.reshape(x_test.shape[0], img_rows, img_cols, 1)
    input_shape = (img_rows, img_cols, 1)
    x_train = x_train.astype("float32") / 255
    x_test = x_test.astype("float32") / 255
    y_train = K.utils.to_categorical(y_train, num_classes)
    y_test = K.utils.to_categorical(y_test, num_classes)

    model = K.models.Sequential()
    model.add(K.layers.Input(shape=input_shape))
    model.add(K.layers.Conv2D(2, kernel_size=(3, 3), activation="relu"))
    model.add(K.layers.Conv2D(4, (3, 3), activation="relu"))
    model.add(K.layers.MaxPooling2D(pool_size=(2, 2)))
    model.add(K.layers.Dropout(0.25))
    model.add(K.layers.Flatten())
    model.add(K.layers.Dense(16, activation="relu"))
    model.add(K.layers.Dropout(0.5))
    model.add(K.layers.Dense(num_classes))
    model.add(K.layers.Activation("softmax"))
    model.compile(loss=K.losses.categorical_crossentropy, optimizer=K.optimizers.Adadelta(), metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, validation_data=(x_test, y_test))

    # explain by passing the tensorflow inputs and outputs
    inds = rs.choice(x_train.shape[0], 3, replace=False)
    e = tfshap.DeepExplainer((model.inputs, model.layers[-1].output), x_train[inds, :, :])
    shap_values = e.shap_values(x_test[:1])
    shap_values_call = e(x_test[:1])
    np.testing.assert_array_almost_equal(shap_values, shap_values_call.values, decimal=8)
    predicted = model(x_test[:1])
    sums = shap_values.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(sums + e.expected_value, predicted, atol=1e-3)


def _linear_data(random_seed):
    rs = np.random.RandomState(random_seed)
    coef = np.array([1, 2]).T
    x = rs.normal(1, 10, size=(1000, len(coef)))
    y = np.dot(x, coef) + 1 + rs.normal(scale=0.1, size=1000)
    return x, y


@pytest.mark.parametrize("activation", ["relu", "elu", "selu"])
def test_tf_keras_activations(K, activation):
    """Test verifying that a linear model with linear data gives the correct result."""
    random_seed = 0
    _seed(K, random_seed)
    x, y = _linear_data(random_seed)
    inputs = K.layers.Input(shape=(2,))
    preds = K.layers.Dense(1, activation=activation)(inputs)
    model = K.models.Model(inputs=inputs, outputs=preds)
    model.compile(optimizer=K.optimizers.SGD(), loss="mse", metrics=["mse"])
    model.fit(x, y, epochs=30, shuffle=False, verbose=0)

    e = tfshap.DeepExplainer((model.inputs[0], model.layers[-1].output), x)
    shap_values = e.shap_values(x)
    preds = model.predict(x, verbose=0)
    assert shap_values.shape == (1000, 2, 1)
    np.testing.assert_allclose(shap_values.sum(axis=1) + e.expected_value, preds, atol=1e-5)


def test_tf_keras_linear(K):
    """Test verifying that a linear model with linear data gives the correct result."""
    random_seed = 0
    _seed(K, random_seed)
    x, y = _linear_data(random_seed)
    inputs = K.layers.Input(shape=(2,))
    preds = K.layers.Dense(1, activation="linear")(inputs)
    model = K.models.Model(inputs=inputs, outputs=preds)
    model.compile(optimizer=K.optimizers.SGD(), loss="mse", metrics=["mse"])
    model.fit(x, y, epochs=30, shuffle=False, verbose=0)
    fit_coef = model.layers[1].get_weights()[0].T[0]

    e = tfshap.DeepExplainer((model.inputs, model.layers[-1].output), x)
    shap_values = e.shap_values(x)
    assert shap_values.shape == (1000, 2, 1)
    # verify that the explanation follows the equation in LinearExplainer
    expected = (x - x.mean(0)) * fit_coef
    np.testing.assert_allclose(shap_values.sum(-1), expected, atol=1e-5)


def test_tf_keras_imdb_lstm(K, random_seed):
    """Basic LSTM example (shap skips it on TensorFlow >= 2.5 and downloads IMDB; here: generated
    token ids of variable length, attributed at the embedding since token ids have no gradient)."""
    rs = np.random.RandomState(random_seed)
    _seed(K, random_seed)
    max_features = 1000
    X_train = rs.randint(1, max_features, size=(20, 100))
    X_test = rs.randint(1, max_features, size=(12, 100))

    mod = K.models.Sequential()
    mod.add(K.layers.Input(shape=(None,), dtype="int32"))  # any sequence length
    mod.add(K.layers.Embedding(max_features, 8, name="embedding"))
    mod.add(K.layers.LSTM(10, dropout=0.2, recurrent_dropout=0.2))
    mod.add(K.layers.Dense(1, activation="sigmoid"))
    mod.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])

    inds = rs.choice(X_train.shape[0], 3, replace=False)
    background = X_train[inds]
    testx = X_test[10:11]
    e = tfshap.compile(mod, background, inputs="embedding")
    shap_values = e.shap_values(testx)
    sums = np.array([shap_values[i].sum() for i in range(len(shap_values))])
    diff = np.asarray(mod(testx))[0, :] - np.asarray(mod(background)).mean(0)
    np.testing.assert_allclose(sums, diff, atol=1e-02)


def test_tf_deep_multi_inputs_multi_outputs(K):
    input1 = K.layers.Input(shape=(3,))
    input2 = K.layers.Input(shape=(4,))
    concatenated = K.layers.concatenate([input1, input2])
    x = K.layers.Dense(16, activation="relu")(concatenated)
    output = K.layers.Dense(3, activation="softmax")(x)
    model = K.models.Model(inputs=[input1, input2], outputs=output)
    batch_size = 32
    input1_data = np.random.default_rng(0).random((batch_size, 3))
    input2_data = np.random.default_rng(1).random((batch_size, 4))

    predicted = model.predict([input1_data, input2_data], verbose=0)
    explainer = tfshap.DeepExplainer(model, [input1_data, input2_data])
    shap_values = explainer.shap_values([input1_data, input2_data])
    np.testing.assert_allclose(
        shap_values[0].sum(1) + shap_values[1].sum(1) + explainer.expected_value, predicted, atol=1e-3
    )
    explanation = explainer([input1_data, input2_data])
    for got, expected in zip(explanation.values, shap_values):
        np.testing.assert_array_equal(got, expected)


# -- beyond shap's file: the float32 sums at shap's tolerance, for many background rows ----------
@pytest.mark.parametrize("n_background", [1000, 10000])
def test_float32_sums_are_within_a_couple_of_ulps_of_the_models_own_output(K, n_background):
    # A float32 Dense model on inputs up to about 60: each value is a mean over the background
    # of m · (x − r) (one rounding for the difference, one for the product), summed in float64,
    # so the sums can only miss f(x) − E f(r) by the model's own rounding of f(x) and of each
    # f(r) (eps/2 per addition and product of w·x + b) plus eps per term of the values:
    #   |miss| ≤ 2 eps (Σ_j |w_j x_j| + |b| + mean_k (Σ_j |w_j r_kj| + |b|) + Σ_j |w_j| mean_k |x_j − r_kj|).
    rng = np.random.default_rng(n_background)
    x = rng.normal(1, 10, size=(n_background + 200, 2)).astype(np.float32)
    background, samples = x[:n_background], x[n_background:]
    inputs = K.layers.Input(shape=(2,))
    model = K.models.Model(inputs, K.layers.Dense(1)(inputs))
    w, b = np.array([[1.3], [2.1]], np.float32), np.array([1.1], np.float32)
    model.layers[-1].set_weights([w, b])
    result = tfshap.compile(model, background).explain(samples)
    eps = np.finfo(np.float32).eps
    w64, b64 = w[:, 0].astype(np.float64), float(b[0])
    magnitude = (np.abs(samples * w64).sum(1) + abs(b64) + (np.abs(background * w64).sum(1) + abs(b64)).mean()
                 + (np.abs(w64) * np.abs(samples[:, None] - background[None]).mean(1)).sum(1))
    miss = np.abs(result.values.astype(np.float64).sum(1)[:, 0] + result.base_values[0] - result.outputs[:, 0])
    assert np.all(miss <= 2 * eps * magnitude), (miss / (eps * magnitude)).max()
    np.testing.assert_allclose(
        result.outputs, model.predict(samples, verbose=0), rtol=0, atol=2 * eps * magnitude.max()
    )
