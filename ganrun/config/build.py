"""Building a run's pieces from its config: latent, networks, objective, terms, module.

``ganrun.train`` (training), ``ganrun-sample`` and ``ganrun-eval`` (rebuilding G from the
config saved in a checkpoint) all build through these functions; Hydra's ``_target_``
is the registry, so nothing here names a model.
"""

from __future__ import annotations

import inspect

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from ganrun.errors import ConfigError
from ganrun.objectives.terms import GradientPenalty, Term, Terms, WeightClip
from ganrun.runtime import fast


def instantiate(node, **kwargs):
    """Hydra's instantiate, re-raising the user's error (bad value) that Hydra wraps.
    Values the target's constructor declares as numbers, integers or bools are checked
    first (``ganrun.config.checks.check_arguments``), so ``model.module.q_shift=abc`` is a
    one-line refusal in preflight rather than a failure in the middle of training."""
    if isinstance(node, DictConfig) and isinstance(node.get("_target_"), str):
        from hydra.utils import get_object

        from ganrun.config.checks import check_arguments

        try:
            target = get_object(node._target_)
        except Exception:  # noqa: BLE001 - an unknown _target_ is Hydra's error to report, below
            target = None
        if target is not None:
            check_arguments(node, target)
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, (ConfigError, FileNotFoundError)):
            raise cause from None
        raise


def build_latent(model_cfg: DictConfig):
    """G's input distribution: ``model.latent`` (default: N(0, I) of ``model.z_dim`` dims)."""
    from ganrun.training.latent import GaussianLatent

    if model_cfg.get("latent") is None:
        return GaussianLatent(z_dim=model_cfg.z_dim)
    return instantiate(model_cfg.latent, z_dim=model_cfg.z_dim)


def build_networks(model_cfg: DictConfig, data_shape, num_classes: int, is_image: bool, terms=()):
    """G and D from ``model.generator`` / ``model.discriminator`` for data of this shape.
    ``terms``: the run's terms, for the keywords they need D's constructor to receive
    (``Term.discriminator_arguments``: minibatch discrimination).

    On 2-D data, ``model.toy`` (set by ``configs/model_dataset/<model>_<dataset>.yaml``,
    e.g. WGAN-GP's 3 x 512 MLPs) replaces image networks such as DCGAN's, not a user's
    class. Constructors get what ``ganrun.models.contract`` (docs/networks.md) promises.
    """
    from hydra.utils import get_class

    from ganrun.models.contract import architecture_nodes, build_network

    generator_node, discriminator_node = architecture_nodes(model_cfg, is_image)
    generator = build_network(
        generator_node,
        z_dim=build_latent(model_cfg).dim,
        data_shape=tuple(data_shape),
        num_classes=num_classes,
        bounded_output=is_image,
    )
    discriminator_arguments = (
        Terms(terms).discriminator_arguments(get_class(discriminator_node._target_)) if terms else {}
    )
    discriminator = build_network(
        discriminator_node,
        data_shape=tuple(data_shape),
        num_classes=num_classes,
        **discriminator_arguments,
    )
    return generator, discriminator


def build_objective(cfg: DictConfig):
    """``loss.objective`` (one-sided label smoothing is a term: ``LabelSmoothing``)."""
    return instantiate(cfg.loss.objective)


# tricks.<key> -> (the term it names, the field it sets; None: the switch alone). The
# term's YAML is configs/term/<name>.yaml; the first key of each name switches it.
TRICK_ALIASES = {
    "label_smoothing": ("label_smoothing", "smoothing"),
    "instance_noise_std": ("instance_noise", "std"),
    "instance_noise_anneal_steps": ("instance_noise", "anneal_steps"),
    "ema_decay": ("ema", "decay"),
    "grad_clip_norm": ("grad_clip", "max_norm"),
    "minibatch_discrimination": ("minibatch_discrimination", None),
    "mine_weight": ("mine", "weight"),
    "mine_anneal_steps": ("mine", "anneal_steps"),
    "mine_target": ("mine", "target"),
    "mine_code_dims": ("mine", "code_dims"),
}


def term_nodes(cfg: DictConfig) -> dict:
    """The run's ``terms.<name>`` nodes with the ``tricks.*`` aliases applied
    (``TRICK_ALIASES``). A null alias leaves its term as configured; a term's switch (its
    first key) set to 0 or false removes it, set to another value creates it from
    ``configs/term/<name>.yaml`` when absent; the other keys set their field of a term
    that is on (``tricks.mine_target=code`` tunes a recipe's ``terms.mine``)."""
    nodes = {name: node for name, node in (cfg.get("terms") or {}).items() if node}
    tricks = cfg.get("tricks") or {}
    switches: dict = {}
    fields: dict = {}
    for key, (name, field) in TRICK_ALIASES.items():
        value = tricks.get(key)
        if name not in switches:
            switches[name] = value
        elif value is not None:
            fields.setdefault(name, {})[field] = value
    for name, switch in switches.items():
        if switch is not None and not switch:
            nodes.pop(name, None)
            continue
        if switch is None and (name not in nodes or name not in fields):
            continue  # tuning keys alone do not switch a term on; no key set: the node as configured
        first_field = next(field for _, (n, field) in TRICK_ALIASES.items() if n == name)
        values = dict(fields.get(name, {}))
        if switch is not None and first_field is not None:
            values[first_field] = switch
        base = nodes[name] if name in nodes else term_yaml(name)
        nodes[name] = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(base, resolve=True)), values)
    return nodes


def term_yaml(name: str) -> DictConfig:
    """``terms.<name>`` as ``configs/term/<name>.yaml`` defines it."""
    from pathlib import Path

    from ganrun import config_dir

    return OmegaConf.load(Path(config_dir()) / "term" / f"{name}.yaml").terms[name]


def build_terms(cfg: DictConfig, *, latent, data_shape, num_classes: int, fast_kernels: bool = False) -> list[Term]:
    """``instantiate_terms``, each set up for this run's shapes (``setup_terms``)."""
    terms = instantiate_terms(cfg, fast_kernels=fast_kernels)
    setup_terms(terms, latent=latent, data_shape=data_shape, num_classes=num_classes)
    return terms


def setup_terms(terms: list[Term], *, latent, data_shape, num_classes: int) -> None:
    """Build the terms' own networks (MINE's T). In ``build_module`` after G and D, so that
    G's and D's initial weights do not depend on the terms chosen."""
    for term in terms:
        term.setup(latent=latent, data_shape=tuple(data_shape), num_classes=num_classes)


def instantiate_terms(cfg: DictConfig, *, fast_kernels: bool = False) -> list[Term]:
    """Penalties, constraints, regularisers and tricks (``ganrun.objectives``), not yet set
    up: ``loss.gradient_penalty`` (a weight, 0 for none), ``loss.weight_clip`` (c, null for
    none), and every ``terms.<name>`` node with a ``_target_`` (``term=NAME``; the
    ``tricks.*`` aliases set theirs). A term that trains its own network gets
    ``fast_kernels`` for its optimizer."""
    from hydra.utils import get_class

    terms: list[Term] = []
    if cfg.loss.get("gradient_penalty"):
        terms.append(GradientPenalty(cfg.loss.gradient_penalty))
    if cfg.loss.get("weight_clip") is not None:
        terms.append(WeightClip(cfg.loss.weight_clip))
    for name, node in term_nodes(cfg).items():
        if "_target_" not in node:
            raise ConfigError(
                f"terms.{name} has no _target_; give the term's class, e.g. terms.{name}._target_=ganrun.objectives.terms.GradientPenalty"
            )
        if node.get("anneal_steps", 0) is None:  # e.g. a recipe's ${steps} with steps=null
            raise ConfigError(
                f"terms.{name}.anneal_steps=null is not valid (it follows steps=, which is null); "
                f"set steps=N, or terms.{name}.anneal_steps=0 for a constant weight"
            )
        accepts_fast = "fast_kernels" in inspect.signature(get_class(node._target_)).parameters
        terms.append(instantiate(node, **({"fast_kernels": fast_kernels} if accepts_fast else {})))
    return terms


def build_module(cfg: DictConfig, datamodule):
    """The training module of ``model.module`` with its terms (tricks included), networks and objective."""
    from ganrun.models.contract import check_networks
    from ganrun.training.module import optimizer_factory

    num_classes = datamodule.num_classes if cfg.model.conditional else 0
    if cfg.model.conditional and not datamodule.num_classes:
        raise ConfigError(
            f"this model is class-conditional but {datamodule.describe()} has no labels; "
            "use a labelled dataset: digits, mnist, fashion_mnist, cifar10, fake, or folder with class subfolders"
        )
    latent = build_latent(cfg.model)
    fast_kernels = fast.switch(cfg.get("fast"), "fused_optimizers", auto=True)
    terms = instantiate_terms(cfg, fast_kernels=fast_kernels)
    generator, discriminator = build_networks(cfg.model, datamodule.data_shape, num_classes, datamodule.is_image, terms)
    setup_terms(terms, latent=latent, data_shape=datamodule.data_shape, num_classes=num_classes)
    check_networks(
        cfg,
        generator,
        discriminator,
        data_shape=datamodule.data_shape,
        num_classes=num_classes,
        is_image=datamodule.is_image,
        terms=terms,
    )  # the contract of docs/networks.md, before anything trains
    lr = cfg.optimizer.lr
    module = instantiate(
        cfg.model.module,
        generator=generator,
        discriminator=discriminator,
        objective=build_objective(cfg),
        latent=latent,
        num_classes=num_classes,
        n_critic=cfg.n_critic,
        optimizer_g=optimizer_factory(cfg.optimizer, cfg.optimizer.lr_g or lr, fast_kernels),
        optimizer_d=optimizer_factory(cfg.optimizer, cfg.optimizer.lr_d or lr, fast_kernels),
        max_g_updates=cfg.steps,
        terms=terms,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    module.run_config = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data_shape": list(datamodule.data_shape),
        "num_classes": num_classes,
        "is_image": datamodule.is_image,
    }
    return module
