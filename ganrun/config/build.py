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

from ganrun.runtime import fast
from ganrun.errors import ConfigError
from ganrun.objectives.terms import GradientPenalty, Term, WeightClip


def instantiate(node, **kwargs):
    """Hydra's instantiate, re-raising the user's error (bad value) that Hydra wraps.
    Values the target's constructor declares as numbers, integers or bools are checked
    first (``config_check.check_arguments``), so ``model.module.q_shift=abc`` is a
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


def build_networks(model_cfg: DictConfig, data_shape, num_classes: int, is_image: bool, tricks=None):
    """G and D from ``model.generator`` / ``model.discriminator`` for data of this shape.
    ``tricks``: those built into D (``tricks.minibatch_discrimination``).

    On 2-D data, ``model.toy`` (set by ``configs/model_dataset/<model>_<dataset>.yaml``,
    e.g. WGAN-GP's 3 x 512 MLPs) replaces image networks such as DCGAN's.
    """
    architecture = model_cfg
    if not is_image and model_cfg.get("toy") is not None:
        architecture = model_cfg.toy
    generator = instantiate(
        architecture.generator,
        z_dim=build_latent(model_cfg).dim,
        data_shape=tuple(data_shape),
        num_classes=num_classes,
        bounded_output=is_image,
    )
    discriminator = instantiate(
        architecture.discriminator,
        data_shape=tuple(data_shape),
        num_classes=num_classes,
        **discriminator_tricks(architecture.discriminator, tricks),
    )
    return generator, discriminator


def discriminator_tricks(node: DictConfig, tricks) -> dict:
    """Keyword arguments for D's constructor from the tricks that live in D's architecture."""
    from hydra.utils import get_class

    if not (tricks and tricks.get("minibatch_discrimination")):
        return {}
    if "minibatch_discrimination" not in inspect.signature(get_class(node._target_)).parameters:
        raise ConfigError(
            f"tricks.minibatch_discrimination=true is not supported by {node._target_}; "
            "it works with the MLP, DCGAN and MSG-GAN discriminators (model=gan, cgan, dcgan, lsgan, wgan, wgan_gp, infogan, msggan)"
        )
    return {"minibatch_discrimination": True}


def build_objective(cfg: DictConfig):
    """``loss.objective``, with one-sided label smoothing's real target (``tricks.label_smoothing``)."""
    objective = instantiate(cfg.loss.objective)
    smoothing = cfg.tricks.label_smoothing
    if smoothing:
        if not getattr(objective, "supports_label_smoothing", False):
            raise ConfigError(
                f"tricks.label_smoothing={smoothing} needs a loss with a real-label target "
                f"(minimax, ns, ls); {type(objective).__name__} has none"
            )
        objective.real_target = 1.0 - smoothing
    return objective


# tricks.mine_* are other names for the fields of the terms.mine node (configs/term/mine.yaml).
MINE_ALIASES = {"mine_weight": "weight", "mine_anneal_steps": "anneal_steps", "mine_target": "target",
                "mine_code_dims": "code_dims"}


def term_nodes(cfg: DictConfig) -> dict:
    """The run's ``terms.<name>`` nodes, with the ``tricks.mine_*`` aliases applied to
    ``terms.mine``: a set alias overrides that field (creating the node when MINE was off),
    and ``tricks.mine_weight=0`` removes it."""
    nodes = {name: node for name, node in (cfg.get("terms") or {}).items() if node}
    tricks = cfg.get("tricks") or {}
    aliases = {field: tricks[key] for key, field in MINE_ALIASES.items() if tricks.get(key) is not None}
    if aliases.get("weight") == 0:
        nodes.pop("mine", None)
    elif "mine" in nodes or aliases.get("weight"):  # the other aliases tune MINE, they do not switch it on
        base = OmegaConf.to_container(nodes["mine"], resolve=True) if "mine" in nodes else {"_target_": "ganrun.objectives.mine.MINETerm"}
        nodes["mine"] = OmegaConf.merge(OmegaConf.create(base), aliases)
    return nodes


def build_terms(cfg: DictConfig, *, latent, data_shape, num_classes: int, fast_kernels: bool = False) -> list[Term]:
    """Penalties, constraints and regularisers (``ganrun.objectives.terms``): ``loss.gradient_penalty``
    (a weight, 0 for none), ``loss.weight_clip`` (c, null for none), and every ``terms.<name>``
    node with a ``_target_`` (``term=NAME``; ``tricks.mine_*`` set ``terms.mine``), set up for
    this run's shapes. A term that trains its own network gets ``fast_kernels`` for its optimizer."""
    from hydra.utils import get_class

    terms: list[Term] = []
    if cfg.loss.get("gradient_penalty"):
        terms.append(GradientPenalty(cfg.loss.gradient_penalty))
    if cfg.loss.get("weight_clip") is not None:
        terms.append(WeightClip(cfg.loss.weight_clip))
    for name, node in term_nodes(cfg).items():
        if "_target_" not in node:
            raise ConfigError(f"terms.{name} has no _target_; give the term's class, e.g. terms.{name}._target_=ganrun.objectives.terms.GradientPenalty")
        if node.get("anneal_steps", 0) is None:  # e.g. a recipe's ${steps} with steps=null
            raise ConfigError(
                f"terms.{name}.anneal_steps=null is not valid (it follows steps=, which is null); "
                f"set steps=N, or terms.{name}.anneal_steps=0 for a constant weight"
            )
        accepts_fast = "fast_kernels" in inspect.signature(get_class(node._target_)).parameters
        terms.append(instantiate(node, **({"fast_kernels": fast_kernels} if accepts_fast else {})))
    for term in terms:
        term.setup(latent=latent, data_shape=tuple(data_shape), num_classes=num_classes)
    return terms


def build_module(cfg: DictConfig, datamodule):
    """The training module of ``model.module`` with its networks, objective, terms and tricks."""
    from ganrun.training.module import optimizer_factory

    num_classes = datamodule.num_classes if cfg.model.conditional else 0
    if cfg.model.conditional and not datamodule.num_classes:
        raise ConfigError(
            f"this model is class-conditional but {datamodule.describe()} has no labels; "
            "use a labelled dataset: digits, mnist, fashion_mnist, cifar10, fake, or folder with class subfolders"
        )
    generator, discriminator = build_networks(cfg.model, datamodule.data_shape, num_classes, datamodule.is_image, cfg.tricks)
    latent = build_latent(cfg.model)
    tricks, lr = cfg.tricks, cfg.optimizer.lr
    fast_kernels = fast.switch(cfg.get("fast"), "fused_optimizers", auto=True)
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
        terms=build_terms(cfg, latent=latent, data_shape=datamodule.data_shape, num_classes=num_classes,
                          fast_kernels=fast_kernels),
        grad_clip_norm=tricks.grad_clip_norm,
        instance_noise_std=tricks.instance_noise_std,
        instance_noise_anneal_steps=tricks.instance_noise_anneal_steps,
        ema_decay=tricks.ema_decay,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    module.run_config = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data_shape": list(datamodule.data_shape),
        "num_classes": num_classes,
        "is_image": datamodule.is_image,
    }
    return module
