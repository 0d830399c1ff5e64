"""The fast engine against the plain per-node reference, and its invariants."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dice_repro import data
from dice_repro.engine import DivergenceError, Problem, init_params, train
from dice_repro.models import build_model
from dice_repro.reference import reference_train
from dice_repro.settings import RunSettings
from dice_repro.topology import make_topology
from dice_repro.trajectory import build_run, load_run, save_trajectory, train_run

ROUNDS = 20


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist5k")


def make_problem(ds, model: str, topology: str, init: str, nodes: int = 16, batch: int = 8, lr: float = 0.05,
                 dtype: torch.dtype = torch.float32):
    top = make_topology(topology, nodes)
    pools = data.partition(ds.y_train, nodes, 5 * batch, "iid", seed=1)
    schedule = data.batch_schedule(pools, batch, 4, "iid", seed=1)
    fmodel, theta0 = init_params(model, ds.input_shape, ds.num_classes, nodes, init, seed=3)
    mixing = torch.tensor(np.stack(top.matrices), dtype=dtype)
    fmodel.module.to(dtype)
    problem = Problem(fmodel, ds.x_train.to(dtype), ds.y_train, schedule, mixing, lr,
                      ds.x_test[:5].to(dtype), ds.y_test[:5])
    return problem, theta0.to(dtype)


def reference_models(problem: Problem, theta0: torch.Tensor) -> list[torch.nn.Module]:
    models = []
    for row in theta0:
        m = copy.deepcopy(problem.fmodel.module)
        torch.nn.utils.vector_to_parameters(row.clone(), m.parameters())
        models.append(m)
    return models


@pytest.mark.parametrize("init", ["per_node", "common"])
@pytest.mark.parametrize("topology", ["ring", "exponential", "hub16"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_engine_matches_per_node_reference(mnist, model, topology, init):
    """float64, so that the comparison measures the implementation, not float32 rounding order."""
    problem, theta0 = make_problem(mnist, model, topology, init, dtype=torch.float64)
    result = train(problem, theta0, stop=ROUNDS, progress=False)
    models = reference_train(reference_models(problem, theta0), problem.x_train, problem.y_train,
                             problem.schedule, problem.mixing, problem.lr, ROUNDS)
    expected = torch.stack([torch.nn.utils.parameters_to_vector(m.parameters()).detach() for m in models])
    assert torch.allclose(result.final, expected, atol=1e-5, rtol=0), (result.final - expected).abs().max()


def test_per_node_init_differs_and_common_init_agrees(mnist):
    _, per_node = init_params("mlp", mnist.input_shape, 10, 4, "per_node", seed=3)
    _, common = init_params("mlp", mnist.input_shape, 10, 4, "common", seed=3)
    assert not torch.equal(per_node[0], per_node[1])
    assert all(torch.equal(common[0], row) for row in common)


def test_identity_mixing_is_independent_training(mnist):
    problem, theta0 = make_problem(mnist, "mlp", "ring", "per_node", nodes=4)
    problem.mixing = torch.eye(4).unsqueeze(0)
    result = train(problem, theta0, stop=10, progress=False)
    for k in range(4):
        alone = reference_train(reference_models(problem, theta0[k:k + 1]), mnist.x_train, mnist.y_train,
                                problem.schedule[:, k:k + 1], torch.ones(1, 1, 1), problem.lr, 10)[0]
        assert torch.allclose(result.final[k], torch.nn.utils.parameters_to_vector(alone.parameters()), atol=1e-6)


def test_same_seed_gives_identical_states(mnist):
    settings = RunSettings(nodes=4, samples_per_node=64, batch_size=16, epochs=1, unit_rounds=[1, 2])
    a = train_run(build_run(settings, mnist), progress=False)
    b = train_run(build_run(settings, mnist), progress=False)
    assert torch.equal(a.final, b.final)
    assert a.states.keys() == b.states.keys() == {1, 2}
    assert all(torch.equal(a.states[t], b.states[t]) for t in a.states)


def test_replay_axis_matches_plain_step(mnist):
    """A leading replay axis of identical copies computes exactly the factual round."""
    problem, theta0 = make_problem(mnist, "mlp", "exponential", "per_node")
    half, nxt, loss = problem.step(theta0, 0)
    stacked = theta0.expand(3, *theta0.shape).clone()
    half3, nxt3, loss3 = problem.step(stacked, 0, problem.ones().expand(3, *problem.ones().shape))
    for i in range(3):
        assert torch.allclose(nxt3[i], nxt, atol=1e-6)
        assert torch.allclose(loss3[i], loss, atol=1e-6)


def test_divergence_names_node_and_round(mnist):
    problem, theta0 = make_problem(mnist, "mlp", "ring", "per_node", nodes=4)
    x = problem.x_train.clone()
    x[problem.schedule[2, 3, 0]] = float("nan")
    problem.x_train = x
    with pytest.raises(DivergenceError, match=r"round 2: node 3"):
        train(problem, theta0, progress=False)


def test_trajectory_round_trip(mnist, tmp_path):
    settings = RunSettings(nodes=4, samples_per_node=64, batch_size=16, epochs=1, unit_rounds=[0, 2])
    run = build_run(settings, mnist)
    result = train_run(run, progress=False)
    path = tmp_path / "trajectory.pt"
    save_trajectory(run, result, path)
    assert not list(tmp_path.glob(".*tmp"))
    rebuilt, saved = load_run(path)
    assert rebuilt.settings == settings
    assert torch.equal(saved["states"][2], result.states[2])
    assert saved["test_accuracy"].shape == (4,)
    assert torch.equal(train_run(rebuilt, progress=False).final, saved["final"])


def test_models_build():
    for name in ["logreg", "mlp", "cnn", "resnet18_micro"]:
        model = build_model(name, (1, 28, 28), 10)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg", (1, 28, 28), 10)
