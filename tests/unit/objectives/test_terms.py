"""The term interface (ganrun/objectives/terms.py): penalties, constraints and trainable regularisers."""

from __future__ import annotations

import pytest
import torch
from support import FAST, group_options
from torch import nn

from ganrun.errors import ConfigError
from ganrun.objectives.terms import GradientPenalty, R1Penalty, Term, Terms, WeightClip
from ganrun.training.latent import GaussianLatent

RING = [
    *FAST,
    "model=gan",
    "dataset=ring",
    "dataset.batch_size=16",
    "model.z_dim=4",
    "model.generator.hidden=[16]",
    "model.discriminator.hidden=[16]",
    "callbacks=none",
    "logger=none",
]


class ProbeTerm(Term):
    """A trainable term like MINE: a parameter with its own optimizer, a G loss term."""

    name = "probe"

    def __init__(self, weight: float = 0.5, **kwargs) -> None:
        super().__init__(weight, **kwargs)
        self.calls = {"generator_loss": 0, "own_loss": 0}

    def setup(self, *, latent, data_shape, num_classes) -> None:
        self.statistics = nn.Linear(latent.dim + data_shape[0], 1)

    def generator_loss(self, fake, noise, labels):
        self.calls["generator_loss"] += 1
        assert fake.requires_grad and not self.statistics.weight.requires_grad  # G trains, T frozen
        return self.statistics(torch.cat([noise, fake], dim=1)).mean()

    def configure_optimizer(self):
        return torch.optim.SGD(self.statistics.parameters(), lr=0.1)

    def own_loss(self, fake, noise, labels):
        self.calls["own_loss"] += 1
        assert not fake.requires_grad and self.statistics.weight.requires_grad
        return -self.statistics(torch.cat([noise, fake], dim=1)).mean()


def test_a_trainable_term_steps_its_own_network_is_checkpointed_and_adds_to_g_loss(make_config, tmp_path, monkeypatch):
    from ganrun.config import build
    from ganrun.train import train

    probe = ProbeTerm()
    made = []
    set_up = probe.setup

    def setup(**shapes):
        set_up(**shapes)
        made.append(probe.statistics.weight.detach().clone())

    probe.setup = setup
    monkeypatch.setattr(build, "instantiate_terms", lambda cfg, fast_kernels=False: [probe])
    metrics = train(make_config(*RING, "steps=3", "callbacks=default", "callbacks.samples.every_n_steps=0"))
    assert probe.calls == {"generator_loss": 3, "own_loss": 3}
    assert not torch.equal(made[0], probe.statistics.weight)  # its optimizer stepped it
    assert "loss/probe" in metrics and "loss/probe_own" in metrics
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert torch.equal(checkpoint["state_dict"]["terms.probe.statistics.weight"], probe.statistics.weight)
    assert len(checkpoint["optimizer_states"]) == 3  # G, D, the term's


def test_terms_are_built_from_loss_keys_and_term_nodes(make_config):
    from ganrun.config.build import build_terms

    shapes = {"latent": GaussianLatent(z_dim=4), "data_shape": (2,), "num_classes": 0}
    terms = build_terms(make_config("loss=wgan_gp", "term=r1"), **shapes)
    assert [type(t) for t in terms] == [GradientPenalty, R1Penalty] and terms[0].weight == 10.0
    terms = build_terms(make_config("loss=wgan"), **shapes)
    assert [type(t) for t in terms] == [WeightClip] and terms[0].clip == 0.01
    assert build_terms(make_config("loss=ns"), **shapes) == []


@pytest.mark.parametrize("term", [GradientPenalty(10.0), R1Penalty()])
def test_per_example_penalties_refuse_batch_norm_in_the_critic(term):
    critic = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    with pytest.raises(ConfigError, match="batch norm"):
        Terms([term]).check_networks(nn.Linear(2, 2), critic)


def test_r1_is_the_squared_input_gradient_on_real_data_only():
    w = torch.tensor([3.0, 4.0])
    critic = lambda x, labels: x @ w  # noqa: E731  gradient w everywhere: ||w||^2 = 25
    value = R1Penalty().critic_penalty(critic, torch.randn(5, 2), torch.full((5, 2), float("nan")), None)
    assert value.item() == pytest.approx(25.0)


def test_bad_penalty_values_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="loss.weight_clip=0"):
        WeightClip(0)
    with pytest.raises(ConfigError, match="loss.gradient_penalty=-1"):
        GradientPenalty(-1)
    with pytest.raises(ConfigError, match="twice"):
        Terms([WeightClip(0.1), WeightClip(0.2)])


@pytest.mark.parametrize("term", group_options("term"))
def test_every_term_option_trains_two_steps(make_config, term):
    """Each configs/term/*.yaml composes, builds the term it names (its class's ``name`` is the
    YAML's key) and trains; a term that adds to a loss logs it (new terms are tested automatically)."""
    from ganrun.config.build import build_terms
    from ganrun.objectives.tricks import Trick
    from ganrun.train import train

    cfg = make_config(*RING, f"term={term}", "steps=2")
    terms = build_terms(cfg, latent=GaussianLatent(z_dim=4), data_shape=(2,), num_classes=0)
    built = {each.name: each for each in terms}[term]
    metrics = train(cfg)
    assert metrics["g_updates"] == 2.0
    if not isinstance(built, Trick):
        assert any(key.startswith("loss/") and key not in ("loss/d", "loss/g") for key in metrics), metrics


# tricks.<key>=value and the term's own field: the same term, built the same way.
TRICK_ALIAS_CASES = [
    ("tricks.label_smoothing=0.2", "label_smoothing", {"smoothing": 0.2}),
    ("tricks.instance_noise_std=0.3", "instance_noise", {"weight": 0.3, "anneal_steps": 0}),
    ("tricks.ema_decay=0.9", "ema", {"decay": 0.9}),
    ("tricks.grad_clip_norm=2.0", "grad_clip", {"max_norm": 2.0}),
    ("tricks.minibatch_discrimination=true", "minibatch_discrimination", {}),
]


@pytest.mark.parametrize("alias, name, fields", TRICK_ALIAS_CASES)
def test_tricks_keys_switch_their_term_on_off_and_leave_it_alone_when_null(make_config, alias, name, fields):
    from ganrun.config.build import build_terms

    def built(*overrides):
        terms = build_terms(
            make_config(*RING, "tricks.mine_weight=0", *overrides),
            latent=GaussianLatent(z_dim=4),
            data_shape=(2,),
            num_classes=0,
        )
        return {term.name: term for term in terms}

    assert built() == {}  # every trick is off by default
    (term,) = built(alias).values()
    assert term.name == name and {key: getattr(term, key) for key in fields} == fields
    assert name in built(f"term={name}")  # null: as term=NAME configured it
    off = "false" if name == "minibatch_discrimination" else "0"
    assert built(f"term={name}", f"{alias.split('=')[0]}={off}") == {}  # 0 / false: off
    if name == "instance_noise":
        (annealed,) = built(alias, "tricks.instance_noise_anneal_steps=7").values()
        assert annealed.anneal_steps == 7 and annealed.weight == 0.3


def test_checkpoints_that_numbered_the_terms_load_by_name():
    """Terms are keyed by name (``terms.<name>.*``); a state dict that numbered the terms with
    networks of their own (``terms.<i>.*``, tricks not counted) loads into the same terms."""
    from ganrun.objectives.tricks import InstanceNoise

    old, new = (
        Terms([GradientPenalty(10.0), ProbeTerm()]),
        Terms([InstanceNoise(0.1), GradientPenalty(10.0), ProbeTerm()]),
    )
    for terms in (old, new):
        terms["probe"].setup(latent=GaussianLatent(z_dim=2), data_shape=(2,), num_classes=0)
    numbered = {f"1.{key.split('.', 1)[1]}": value for key, value in old.state_dict().items()}
    assert set(numbered) == {"1.statistics.weight", "1.statistics.bias"}
    assert not torch.equal(new["probe"].statistics.weight, old["probe"].statistics.weight)
    new.load_state_dict(numbered)  # strict
    assert torch.equal(new["probe"].statistics.weight, old["probe"].statistics.weight)


def test_an_annealed_weight_decays_linearly_to_zero():
    """Term(anneal_steps=N): the weight at G update g is weight * (1 - g/N), 0 from N on;
    Terms.weighted applies it and logs the unweighted value."""
    term = ProbeTerm(weight=0.5, anneal_steps=4)
    assert [term.weight_at(step) for step in (0, 1, 2, 4, 9)] == [0.5, 0.375, 0.25, 0.0, 0.0]
    assert ProbeTerm(weight=0.5).weight_at(10_000) == 0.5  # anneal_steps=0: constant
    stats: dict = {}
    loss = Terms([term]).weighted(torch.tensor(1.0), {"probe": torch.tensor(2.0)}, stats, g_updates=2)
    assert float(loss) == 1.5 and float(stats["loss/probe"]) == 2.0  # weighted by 0.25, logged unweighted
    with pytest.raises(ConfigError, match="anneal_steps=-1"):
        Term(1.0, anneal_steps=-1)
    assert R1Penalty(5.0, anneal_steps=10).weight_at(5) == 2.5  # the penalties anneal too (terms.r1.anneal_steps=N)


def test_training_weighs_each_g_step_with_the_weight_at_that_g_update(make_config, monkeypatch):
    """tricks.mine_anneal_steps reaches MINE's term, and the module asks each term for its
    weight at the current G update (not a constant)."""
    from ganrun.config import build
    from ganrun.objectives.mine import MINETerm
    from ganrun.train import train

    shapes = {"latent": GaussianLatent(z_dim=4), "data_shape": (2,), "num_classes": 0}
    (mine,) = build.build_terms(make_config("tricks.mine_weight=0.5", "tricks.mine_anneal_steps=100"), **shapes)
    assert isinstance(mine, MINETerm) and mine.weight_at(50) == 0.25

    probe, asked = ProbeTerm(), []
    probe.weight_at = lambda g_updates: asked.append(g_updates) or 0.5

    monkeypatch.setattr(build, "instantiate_terms", lambda cfg, fast_kernels=False: [probe])
    train(make_config(*RING, "steps=3"))
    assert set(asked) == {0, 1, 2} and asked == sorted(asked), asked  # D's and G's steps at G updates 0, 1, 2


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], {"weight": 1.0, "anneal_steps": 50, "target": "code", "code_dims": 1}),  # the ring recipe's terms.mine
        (["tricks.mine_target=noise"], {"weight": 1.0, "anneal_steps": 50, "target": "noise"}),
        (
            ["tricks.mine_weight=0.3", "tricks.mine_code_dims=1", "tricks.mine_anneal_steps=0"],
            {"weight": 0.3, "anneal_steps": 0, "code_dims": 1},
        ),
        (["tricks.mine_weight=0"], None),  # switches the recipe's MINE off
        (["term=mine"], {"weight": 0.5, "anneal_steps": 50}),  # term=mine's weight over the recipe's
    ],
)
def test_tricks_mine_keys_are_other_names_for_terms_mine(make_config, overrides, expected):
    from ganrun.config.build import build_terms
    from ganrun.objectives.mine import MINETerm

    cfg = make_config(*RING, "model.z_dim=2", "steps=50", *overrides)
    terms = build_terms(cfg, latent=GaussianLatent(z_dim=2), data_shape=(2,), num_classes=0)
    mine = [term for term in terms if isinstance(term, MINETerm)]
    if expected is None:
        assert not mine
        return
    (term,) = mine
    for name, value in expected.items():
        assert getattr(term, name) == value, (name, getattr(term, name))


def test_mine_aliases_other_than_the_weight_do_not_switch_mine_on(make_config):
    from ganrun.config.build import build_terms

    cfg = make_config("tricks.mine_target=noise", "tricks.mine_anneal_steps=0")  # the default job: no MINE
    assert build_terms(cfg, latent=GaussianLatent(z_dim=2), data_shape=(2,), num_classes=0) == []
